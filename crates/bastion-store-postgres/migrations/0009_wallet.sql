-- Wallets (SPEC P5): one balance row per wallet and currency, and a double-entry ledger that is
-- only ever appended to. Every posting writes two entries summing to zero: one on the wallet's
-- own account ('wallet') and one on its counter-account ('funding' for credits and their
-- reversals, 'spending' for debits), so the wallet account's sum is the balance.
--
-- Who may do what (policies below, same helpers as 0006–0008):
-- - org wallets: wallet.read in the wallet's org reads; wallet.manage creates, posts and sets
--   the credit line;
-- - user wallets: the owner reads and debits (a trigger refuses anything else a request scope
--   would change on them: no credit, no credit line); creation, credits and reversals come from
--   the system path (`Scope::System("payments")`);
-- - nobody updates or deletes an entry (no grant, no policy, and a trigger even for the owner).
--
-- Deleting an org (or a user) still works: the cascade deletes its wallets, then their entries.
-- The append-only trigger lets an entry go only once its wallet row is gone, which happens only
-- through that cascade (no role but the schema owner may delete a wallet, and the cascade's own
-- statements run as the table owner without forced RLS, so the trigger sees the wallet gone).

CREATE TABLE bastion.wallets (
    -- `wal_…`
    id              TEXT    PRIMARY KEY,
    org_id          TEXT    REFERENCES bastion.orgs (id) ON DELETE CASCADE,
    user_id         TEXT    REFERENCES bastion.users (id) ON DELETE CASCADE,
    -- ISO 4217 in upper case, or a product's credit unit (CREDITS).
    currency        TEXT    NOT NULL CHECK (currency ~ '^[A-Z][A-Z0-9_]{2,15}$'),
    balance         BIGINT  NOT NULL,
    credit_limit    BIGINT  NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    ledger_version  BIGINT  NOT NULL DEFAULT 0 CHECK (ledger_version >= 0),
    created_ms      BIGINT  NOT NULL,
    updated_ms      BIGINT  NOT NULL,
    -- The owner as the policies' row token: `o:<org>` or `u:<user>`.
    owner           TEXT    GENERATED ALWAYS AS (coalesce('o:' || org_id, 'u:' || user_id)) STORED,
    CHECK ((org_id IS NULL) <> (user_id IS NULL)),
    -- The overdraft floor, whatever the path that changes the row.
    CHECK (balance >= -credit_limit),
    -- One wallet per owner and currency (a NULL owner column never collides, so each of these
    -- constrains exactly one kind of wallet).
    UNIQUE (org_id, currency),
    UNIQUE (user_id, currency),
    -- The target of the entries' (wallet_id, owner) key: an entry's owner is its wallet's.
    UNIQUE (id, owner)
);

CREATE TABLE bastion.wallet_entries (
    -- `wtx_…`, shared by the two entries of one posting.
    txn_id          TEXT    NOT NULL,
    wallet_id       TEXT    NOT NULL,
    -- Copied from the wallet, for the policies; the key below keeps them equal.
    org_id          TEXT,
    user_id         TEXT,
    owner           TEXT    GENERATED ALWAYS AS (coalesce('o:' || org_id, 'u:' || user_id)) STORED,
    account         TEXT    NOT NULL CHECK (account IN ('wallet', 'funding', 'spending')),
    -- The wallet's ledger_version after the posting (both entries carry it).
    seq             BIGINT  NOT NULL CHECK (seq >= 1),
    kind            TEXT    NOT NULL CHECK (kind IN ('credit', 'debit', 'reversal')),
    -- Signed; the two entries of a posting sum to zero.
    amount          BIGINT  NOT NULL CHECK (amount <> 0),
    -- The wallet's balance after the posting, on the wallet account's entry only.
    balance_after   BIGINT,
    reverses        TEXT,
    reference       TEXT,
    memo            TEXT    NOT NULL,
    created_ms      BIGINT  NOT NULL,
    created_by      TEXT    NOT NULL,
    PRIMARY KEY (txn_id, account),
    CHECK ((org_id IS NULL) <> (user_id IS NULL)),
    CHECK ((account = 'wallet') = (balance_after IS NOT NULL)),
    CHECK (account = 'wallet' OR (reverses IS NULL AND reference IS NULL)),
    CHECK (account <> 'wallet' OR (kind = 'reversal') = (reverses IS NOT NULL)),
    -- Credits add to the wallet, debits and reversals take from it.
    CHECK (account <> 'wallet' OR (kind = 'credit') = (amount > 0)),
    CHECK (account = 'wallet' OR account = CASE kind WHEN 'debit' THEN 'spending' ELSE 'funding' END),
    FOREIGN KEY (wallet_id, owner) REFERENCES bastion.wallets (id, owner) ON DELETE CASCADE
);
-- History newest first, and one posting per version.
CREATE UNIQUE INDEX wallet_entries_seq ON bastion.wallet_entries (wallet_id, account, seq);
-- A reference is posted once per wallet: the second post is `Duplicate`.
CREATE UNIQUE INDEX wallet_entries_reference ON bastion.wallet_entries (wallet_id, reference)
    WHERE account = 'wallet' AND reference IS NOT NULL;
-- A credit is reversed at most once, even by racing transactions.
CREATE UNIQUE INDEX wallet_entries_reverses ON bastion.wallet_entries (wallet_id, reverses)
    WHERE account = 'wallet' AND reverses IS NOT NULL;

ALTER TABLE bastion.wallets        ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE bastion.wallet_entries ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;

-- Append-only ledger. Even the owner is stopped, except by the cascade of a deleted wallet
-- (its org's or its user's deletion), see the header.
CREATE FUNCTION bastion.wallet_entries_append_only() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog
    AS $$
BEGIN
    IF TG_OP = 'DELETE' AND NOT EXISTS (SELECT 1 FROM bastion.wallets w WHERE w.id = OLD.wallet_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'wallet_entries is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
REVOKE ALL ON FUNCTION bastion.wallet_entries_append_only() FROM PUBLIC;
CREATE TRIGGER wallet_entries_append_only BEFORE UPDATE OR DELETE ON bastion.wallet_entries
    FOR EACH ROW EXECUTE FUNCTION bastion.wallet_entries_append_only();
CREATE TRIGGER wallet_entries_no_truncate BEFORE TRUNCATE ON bastion.wallet_entries
    FOR EACH STATEMENT EXECUTE FUNCTION bastion.wallet_entries_append_only();

-- System paths (payments, the CLI): everything but rewriting the ledger.
GRANT SELECT, INSERT ON bastion.wallets, bastion.wallet_entries TO bastion_system;
GRANT UPDATE (balance, credit_limit, ledger_version, updated_ms) ON bastion.wallets TO bastion_system;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['wallets', 'wallet_entries'] LOOP
        EXECUTE format('CREATE POLICY system_all ON bastion.%I TO bastion_system '
                       'USING ((SELECT bastion.is_system())) WITH CHECK ((SELECT bastion.is_system()))', t);
    END LOOP;
END
$$;

-- Request work: a wallet changes only in its balance, version and credit line; entries are
-- inserted and read, never changed.
GRANT SELECT, INSERT ON bastion.wallets, bastion.wallet_entries TO bastion_app;
GRANT UPDATE (balance, credit_limit, ledger_version, updated_ms) ON bastion.wallets TO bastion_app;

-- scope_tokens(p) always holds the acting user's own `u:` token, so a user's wallet is its
-- owner's to read and post to under either permission; `o:` needs p in the wallet's org.
CREATE POLICY wallet_read ON bastion.wallets FOR SELECT TO bastion_app
    USING (ARRAY[owner] && (SELECT bastion.scope_tokens('wallet.read')));
-- Request work creates org wallets only, and empty (the balance comes from the ledger).
CREATE POLICY wallet_create ON bastion.wallets FOR INSERT TO bastion_app
    WITH CHECK (org_id IS NOT NULL AND ARRAY['o:' || org_id] && (SELECT bastion.scope_tokens('wallet.manage'))
                AND balance = 0 AND ledger_version = 0);
-- Posting and the credit line; on a user's wallet the trigger below narrows it to debits.
CREATE POLICY wallet_post ON bastion.wallets FOR UPDATE TO bastion_app
    USING (ARRAY[owner] && (SELECT bastion.scope_tokens('wallet.manage')))
    WITH CHECK (ARRAY[owner] && (SELECT bastion.scope_tokens('wallet.manage')));

-- A policy cannot compare old and new: a request scope may only lower a user wallet's balance
-- (a debit) and never change its credit line. The system's paths pass.
CREATE FUNCTION bastion.wallet_change_permitted() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog
    AS $$
BEGIN
    IF bastion.is_system() THEN
        RETURN NEW;
    END IF;
    IF OLD.user_id IS NOT NULL
       AND (NEW.balance > OLD.balance OR NEW.credit_limit <> OLD.credit_limit) THEN
        RAISE EXCEPTION 'a user wallet is credited only by the payments path'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION bastion.wallet_change_permitted() FROM PUBLIC;
CREATE TRIGGER wallets_change_permitted BEFORE UPDATE ON bastion.wallets
    FOR EACH ROW EXECUTE FUNCTION bastion.wallet_change_permitted();

CREATE POLICY entry_read ON bastion.wallet_entries FOR SELECT TO bastion_app
    USING (ARRAY[owner] && (SELECT bastion.scope_tokens('wallet.read')));
-- The (wallet_id, owner) key ties an entry to its wallet's owner; a user posts only debits.
CREATE POLICY entry_post ON bastion.wallet_entries FOR INSERT TO bastion_app
    WITH CHECK (ARRAY[owner] && (SELECT bastion.scope_tokens('wallet.manage'))
                AND (org_id IS NOT NULL OR kind = 'debit'));
