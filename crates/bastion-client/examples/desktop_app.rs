//! A desktop app's licensing, start to finish: use the license in the keychain if it still
//! verifies, otherwise activate online once and store it; then run offline on the lease.
//!
//! ```text
//! cargo run -p bastion-client --example desktop_app -- \
//!     --server http://127.0.0.1:8080 --key BSTL1.… --email ann@example.com \
//!     --public-keys license-keys.json [--now-offset-days 40] [--forget]
//! ```
//! `--now-offset-days` moves the offline clock forward to show the app stopping once the
//! lease is over; `--forget` deletes the keychain entry and exits.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use bastion_client::{Client, Fingerprint, LicenseStorage, Loaded, StoredLicense};
use bastion_crypto::license::PublicKeySet;
use secrecy::{ExposeSecret, SecretString};

const APP_ID: &str = "com.example.bastion-desktop-demo";
const DAY: i64 = 86_400;
const USAGE: &str = "usage: desktop_app --server URL --key KEY --email EMAIL --public-keys FILE \
                     [--now-offset-days N] [--forget]";

struct Args {
    server: String,
    key: SecretString,
    email: String,
    public_keys: String,
    now_offset_days: i64,
    forget: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut server, mut key, mut email, mut public_keys) = (None, None, None, None);
    let (mut now_offset_days, mut forget) = (0, false);
    while let Some(flag) = args.next() {
        if flag == "--forget" {
            forget = true;
            continue;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--server" => server = Some(value),
            "--key" => key = Some(SecretString::from(value)),
            "--email" => email = Some(value),
            "--public-keys" => public_keys = Some(value),
            "--now-offset-days" => {
                now_offset_days = value.parse().map_err(|_| "bad --now-offset-days")?;
            }
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(Args {
        server: server.ok_or(USAGE)?,
        key: key.ok_or(USAGE)?,
        email: email.ok_or(USAGE)?,
        public_keys: public_keys.ok_or(USAGE)?,
        now_offset_days,
        forget,
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("{problem}\n{USAGE}");
            return Ok(ExitCode::from(2));
        }
    };
    let storage = LicenseStorage::for_app(APP_ID);
    if args.forget {
        let removed = storage.clear()?;
        println!(
            "keychain entry {}",
            if removed { "deleted" } else { "was not there" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    // A real app compiles these in with include_str!.
    let keys = PublicKeySet::from_json(&std::fs::read_to_string(&args.public_keys)?)?;
    let machine = Fingerprint::gather()?;
    let now = unix_now();

    // Start-up: the keychain entry is verified as it is read; a bad one is deleted.
    let license = match storage.load(&keys, &machine, now)? {
        Loaded::Valid { license, .. } => {
            println!("license found in the keychain ({})", storage.service());
            license
        }
        other => {
            if let Loaded::Cleared(reason) = other {
                println!("stored license removed: {reason}");
            }
            println!("activating this machine at {}", args.server);
            let client = Client::new(&args.server)?;
            let key = args.key.expose_secret();
            let activated = client
                .activate(key, &args.email, &machine, "desktop_app example")
                .await?;
            let mut license =
                StoredLicense::from_activation(args.key.clone(), &args.email, &activated);
            // Never store what does not verify offline, whatever the server said.
            let status = license.verify(&keys, &machine, now)?;
            let list = client.revocations(&status.license.prd).await?;
            license.offer_revocations(&keys, &list)?;
            storage.save(&license)?;
            println!(
                "activated as {}, saved to the keychain",
                activated.machine_id
            );
            license
        }
    };

    // From here on the app is offline: only the keychain and the shipped public keys.
    let offline_now = now + args.now_offset_days * DAY;
    if args.now_offset_days != 0 {
        println!("(offline clock moved {} days ahead)", args.now_offset_days);
    }
    match license.verify(&keys, &machine, offline_now) {
        Ok(status) => {
            let left = status.runs_until() - offline_now;
            println!(
                "the app may run offline until {} (Unix time), {} days {} hours from now; \
                 entitlements: {}",
                status.runs_until(),
                left / DAY,
                left % DAY / 3600,
                status.entitlements().join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("the app may not run: {e}. Connect to the internet to renew the lease.");
            Ok(ExitCode::FAILURE)
        }
    }
}
