//! `bastion license …`: the operator's side of licensing, and an offline verifier that needs
//! neither a server nor a database.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use bastion_core::licenses::{LicenseDetail, PolicyInput};
use bastion_crypto::license::{DEFAULT_SKEW_SECS, PublicKeySet};
use bastion_server::Bastion;
use bastion_server::config::Config;
use secrecy::ExposeSecret;

use crate::cli::LicenseCommand;

fn when(ms: i64) -> String {
    bastion_core::clock::rfc3339(ms).unwrap_or_else(|| ms.to_string())
}

fn print_detail(d: &LicenseDetail) {
    let l = &d.license;
    println!("license   {}", l.id);
    println!("org       {}", l.org_id);
    println!("product   {}  policy {}", l.product_id, l.policy_id);
    println!("email     {}", l.email);
    println!(
        "status    {}  (failed activations: {})",
        l.status(),
        l.failures
    );
    println!(
        "expires   {}",
        l.expires_ms.map_or_else(|| "never".to_owned(), when)
    );
    println!("machines  {} of {}", d.machines.len(), l.max_machines);
    for m in &d.machines {
        println!(
            "  {}  {:<30}  activated {}  last seen {}",
            m.id,
            m.name,
            when(m.activated_ms),
            when(m.last_seen_ms)
        );
    }
}

/// `bastion license verify`: the same check the app makes, from the public key file alone.
pub fn verify_offline(
    public_key: &Path,
    email: Option<&str>,
    key: &str,
) -> anyhow::Result<ExitCode> {
    let json = std::fs::read_to_string(public_key)
        .with_context(|| format!("reading {}", public_key.display()))?;
    let keys = PublicKeySet::from_json(&json).context("the public key file")?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match keys.verify_license(key, email, now, DEFAULT_SKEW_SECS) {
        Ok(c) => {
            println!(
                "valid: license {} (product {}, policy {})",
                c.lic, c.prd, c.pol
            );
            println!("signed by {} ({})", c.kid, c.alg);
            println!(
                "expires {}",
                c.exp.map_or_else(|| "never".to_owned(), |s| when(s * 1000))
            );
            if !c.ent.is_empty() {
                println!("entitlements {}", c.ent.join(", "));
            }
            if email.is_none() {
                println!("(email binding not checked: pass --email)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("invalid: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

pub async fn run(cfg: &Config, cmd: LicenseCommand) -> anyhow::Result<ExitCode> {
    let b = Bastion::open(cfg).await?;
    let services = bastion_server::startup::auth_services(&b, cfg)?;
    let lic = &services.licensing;
    match cmd {
        LicenseCommand::ProductCreate { org, name } => {
            let p = lic.create_product_cli(&org, &name).await?;
            println!("created product {} ({})", p.id, p.name);
        }
        LicenseCommand::PolicyCreate {
            org,
            product,
            name,
            max_machines,
            duration_days,
            lease_days,
            entitlements,
        } => {
            let input = PolicyInput {
                name,
                max_machines,
                duration_days,
                entitlements,
                lease_days,
            };
            let p = lic.create_policy_cli(&org, &product, &input).await?;
            println!(
                "created policy {} ({}, {} machines)",
                p.id, p.name, p.max_machines
            );
        }
        LicenseCommand::Issue { org, policy, email } => {
            let issued = lic.issue_cli(&org, &policy, &email).await?;
            // The key goes to stdout alone, so a script can capture it; the rest to stderr.
            eprintln!(
                "issued license {} to {} (the key was also mailed)",
                issued.license.id, issued.license.email
            );
            println!("{}", issued.key.expose_secret());
        }
        LicenseCommand::List {
            org,
            product,
            limit,
        } => {
            let rows = lic.licenses_cli(&org, product.as_deref(), limit).await?;
            println!(
                "{:<36}  {:<8}  {:<25}  {:<36}  email",
                "license", "status", "created", "product"
            );
            for l in rows {
                println!(
                    "{:<36}  {:<8}  {:<25}  {:<36}  {}",
                    l.id,
                    l.status(),
                    when(l.created_ms),
                    l.product_id,
                    l.email
                );
            }
        }
        LicenseCommand::Show { license } => print_detail(&lic.license_cli(&license).await?),
        LicenseCommand::Freeze { license } => {
            let changed = lic.set_frozen_cli(&license, true).await?;
            println!(
                "{license}: {}",
                if changed { "frozen" } else { "already frozen" }
            );
        }
        LicenseCommand::Unfreeze { license } => {
            let changed = lic.set_frozen_cli(&license, false).await?;
            println!(
                "{license}: {}",
                if changed {
                    "unfrozen (failure count reset)"
                } else {
                    "was not frozen"
                }
            );
        }
        LicenseCommand::Revoke { license } => {
            let changed = lic.revoke_cli(&license).await?;
            println!(
                "{license}: {}",
                if changed {
                    "revoked"
                } else {
                    "already revoked"
                }
            );
        }
        LicenseCommand::PublicKeys => {
            let keys = serde_json::json!({ "keys": lic.public_keys() });
            println!("{}", serde_json::to_string_pretty(&keys)?);
        }
        LicenseCommand::Verify { .. } => {}
    }
    b.store.close().await;
    Ok(ExitCode::SUCCESS)
}
