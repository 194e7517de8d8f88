-- Wallets (SPEC P5): one balance row per wallet and currency, and a double-entry ledger that is
-- only ever appended to. Every posting writes two entries summing to zero: one on the wallet's
-- own account ('wallet') and one on its counter-account ('funding' for credits and their
-- reversals, 'spending' for debits), so the wallet account's sum is the balance. The store's
-- queries apply the scope (src/wallet.rs).
--
-- Deleting an org (or a user) still works: the cascade deletes its wallets, then their entries.
-- The append-only trigger lets an entry go only once its wallet row is gone (SQLite runs the
-- cascade after deleting the parent row), so nothing else can delete one.

CREATE TABLE wallets (
    -- `wal_…`
    id              TEXT    PRIMARY KEY,
    org_id          TEXT    REFERENCES orgs (id) ON DELETE CASCADE,
    user_id         TEXT    REFERENCES users (id) ON DELETE CASCADE,
    -- ISO 4217 in upper case, or a product's credit unit (CREDITS).
    currency        TEXT    NOT NULL CHECK (length(currency) BETWEEN 3 AND 16
                                            AND currency = upper(currency)
                                            AND currency NOT GLOB '*[^A-Z0-9_]*'),
    balance         INTEGER NOT NULL,
    credit_limit    INTEGER NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    ledger_version  INTEGER NOT NULL DEFAULT 0 CHECK (ledger_version >= 0),
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    CHECK ((org_id IS NULL) <> (user_id IS NULL)),
    -- The overdraft floor, whatever the path that changes the row.
    CHECK (balance >= -credit_limit),
    -- One wallet per owner and currency (a NULL owner column never collides, so each of these
    -- constrains exactly one kind of wallet).
    UNIQUE (org_id, currency),
    UNIQUE (user_id, currency)
);

CREATE TABLE wallet_entries (
    -- `wtx_…`, shared by the two entries of one posting.
    txn_id          TEXT    NOT NULL,
    wallet_id       TEXT    NOT NULL REFERENCES wallets (id) ON DELETE CASCADE,
    -- Copied from the wallet by the insert itself.
    org_id          TEXT,
    user_id         TEXT,
    account         TEXT    NOT NULL CHECK (account IN ('wallet', 'funding', 'spending')),
    -- The wallet's ledger_version after the posting (both entries carry it).
    seq             INTEGER NOT NULL CHECK (seq >= 1),
    kind            TEXT    NOT NULL CHECK (kind IN ('credit', 'debit', 'reversal')),
    -- Signed; the two entries of a posting sum to zero.
    amount          INTEGER NOT NULL CHECK (amount <> 0),
    -- The wallet's balance after the posting, on the wallet account's entry only.
    balance_after   INTEGER,
    reverses        TEXT,
    reference       TEXT,
    memo            TEXT    NOT NULL,
    created_ms      INTEGER NOT NULL,
    created_by      TEXT    NOT NULL,
    PRIMARY KEY (txn_id, account),
    CHECK ((org_id IS NULL) <> (user_id IS NULL)),
    CHECK ((account = 'wallet') = (balance_after IS NOT NULL)),
    CHECK (account = 'wallet' OR (reverses IS NULL AND reference IS NULL)),
    CHECK (account <> 'wallet' OR (kind = 'reversal') = (reverses IS NOT NULL)),
    -- Credits add to the wallet, debits and reversals take from it.
    CHECK (account <> 'wallet' OR (kind = 'credit') = (amount > 0)),
    CHECK (account = 'wallet' OR account = CASE kind WHEN 'debit' THEN 'spending' ELSE 'funding' END)
);
-- History newest first, and one posting per version.
CREATE UNIQUE INDEX wallet_entries_seq ON wallet_entries (wallet_id, account, seq);
-- A reference is posted once per wallet: the second post is `Duplicate`.
CREATE UNIQUE INDEX wallet_entries_reference ON wallet_entries (wallet_id, reference)
    WHERE account = 'wallet' AND reference IS NOT NULL;
-- A credit is reversed at most once.
CREATE UNIQUE INDEX wallet_entries_reverses ON wallet_entries (wallet_id, reverses)
    WHERE account = 'wallet' AND reverses IS NOT NULL;

CREATE TRIGGER wallet_entries_no_update BEFORE UPDATE ON wallet_entries
BEGIN
    SELECT RAISE(ABORT, 'wallet_entries is append-only');
END;
CREATE TRIGGER wallet_entries_no_delete BEFORE DELETE ON wallet_entries
    WHEN EXISTS (SELECT 1 FROM wallets WHERE id = OLD.wallet_id)
BEGIN
    SELECT RAISE(ABORT, 'wallet_entries is append-only');
END;
