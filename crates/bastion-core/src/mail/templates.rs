//! The messages Bastion sends, each as plain text and HTML. Values are HTML-escaped; links are
//! the only dynamic part that carries a secret, and they appear once per body.

use super::Message;

/// Who the mail says it is from, and how long links last (shown to the reader).
#[derive(Debug, Clone)]
pub struct Branding {
    pub product: String,
    pub link_ttl_minutes: i64,
}

/// A message to send. Links are complete URLs with the token in the fragment.
pub enum Template<'a> {
    /// Sign-up: prove you own this address.
    VerifyEmail { link: &'a str },
    /// Forgot password.
    ResetPassword { link: &'a str },
    /// Someone tried to sign up with an address that already has an account (the sign-up
    /// answer does not say so; the owner learns it here).
    AlreadyRegistered,
    /// An invitation to join an organization (SPEC R1).
    OrgInvite {
        link: &'a str,
        org_name: String,
        level: &'static str,
    },
    /// A license was issued to this address (SPEC L2): the key itself, to paste into the app.
    /// The key is the one secret of this mail, like a link in the others.
    LicenseIssued { key: &'a str, product: String },
    /// Too many failed activations froze a license key (SPEC L7).
    LicenseFrozen { product: String },
    /// The app asked to revoke this license (SPEC L5): the link confirms it.
    LicenseRevoke { link: &'a str, product: String },
}

impl Template<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Self::VerifyEmail { .. } => "verify_email",
            Self::ResetPassword { .. } => "reset_password",
            Self::AlreadyRegistered => "already_registered",
            Self::OrgInvite { .. } => "org_invite",
            Self::LicenseIssued { .. } => "license_issued",
            Self::LicenseFrozen { .. } => "license_frozen",
            Self::LicenseRevoke { .. } => "license_revoke",
        }
    }

    pub fn render(&self, b: &Branding, to: &str) -> Message {
        let product = &b.product;
        let ttl = b.link_ttl_minutes;
        let (subject, lines, link) = match self {
            Self::VerifyEmail { link } => (
                format!("Confirm your email for {product}"),
                vec![
                    format!("Confirm that {to} is your address by opening this link:"),
                    format!(
                        "It works once and expires in {ttl} minutes. If you did not sign up, ignore this message."
                    ),
                ],
                Some(*link),
            ),
            Self::ResetPassword { link } => (
                format!("Set your {product} password"),
                vec![
                    "Choose a new password by opening this link:".to_owned(),
                    format!(
                        "It works once and expires in {ttl} minutes; every device signed in to your account will be signed out. If you did not ask for this, ignore this message: your password is unchanged."
                    ),
                ],
                Some(*link),
            ),
            Self::AlreadyRegistered => (
                format!("You already have a {product} account"),
                vec![
                    format!(
                        "Someone, perhaps you, tried to create a {product} account for {to}, which already has one."
                    ),
                    "If it was you, sign in, or reset your password if you forgot it. If not, you can ignore this message: nothing changed.".to_owned(),
                ],
                None,
            ),
            Self::OrgInvite {
                link,
                org_name,
                level,
            } => (
                format!("You are invited to an organization on {product}"),
                vec![
                    format!(
                        "You are invited to join the organization {} on {product} as {level}. Sign in as {to} (or create an account with that address), then open this link:",
                        quoted(org_name)
                    ),
                    format!(
                        "It works once and expires in {ttl} minutes. If you did not expect this, ignore this message."
                    ),
                ],
                Some(*link),
            ),
            Self::LicenseIssued { key, product: item } => (
                "Your license key".to_owned(),
                vec![
                    format!(
                        "Here is your license key for {}, registered to {to}. Paste it into the app together with this address:",
                        quoted(item)
                    ),
                    "Keep it private: anyone with the key and your address can use a seat of your license.".to_owned(),
                ],
                Some(*key),
            ),
            Self::LicenseFrozen { product: item } => (
                "Your license key was frozen".to_owned(),
                vec![
                    format!(
                        "Your license key for {}, registered to {to}, had too many failed activation attempts, so it was frozen to protect it. Machines already activated keep working until their offline lease ends.",
                        quoted(item)
                    ),
                    "If these attempts were not yours, your key may have been shared. Contact the seller to unfreeze it.".to_owned(),
                ],
                None,
            ),
            Self::LicenseRevoke { link, product: item } => (
                "Confirm revoking your license".to_owned(),
                vec![
                    format!(
                        "Someone asked, from an activated copy of {}, to revoke the license registered to {to}. To confirm, open this link:",
                        quoted(item)
                    ),
                    format!(
                        "Revoking stops the license on every machine and cannot be undone. The link works once and expires in {ttl} minutes. If you did not ask for this, ignore this message: your license is unchanged."
                    ),
                ],
                Some(*link),
            ),
        };
        let mut text = String::new();
        let mut html = format!(
            "<!doctype html><html><body style=\"font-family:sans-serif\"><h2>{}</h2>",
            escape(&subject)
        );
        for (i, line) in lines.iter().enumerate() {
            text.push_str(line);
            text.push_str("\n\n");
            html.push_str(&format!("<p>{}</p>", escape(line)));
            if let (0, Some(link)) = (i, link) {
                text.push_str(link);
                text.push_str("\n\n");
                if link.starts_with("https://") || link.starts_with("http://") {
                    html.push_str(&format!("<p><a href=\"{0}\">{0}</a></p>", escape(link)));
                } else {
                    // A license key is pasted, not opened.
                    html.push_str(&format!("<p><code>{}</code></p>", escape(link)));
                }
            }
        }
        text.push_str(&format!("-- \n{product}\n"));
        html.push_str("</body></html>");
        Message {
            to: to.to_owned(),
            subject,
            text,
            html,
        }
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text an org controls (an org or product name), as quoted data: never in a subject, control
/// characters dropped, at most 80 characters, so it cannot pose as Bastion's own words.
fn quoted(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' { '\'' } else { c })
        .collect();
    let clean = clean.trim();
    let mut out: String = clean.chars().take(MAX_CHARS).collect();
    if clean.chars().count() > MAX_CHARS {
        out.push('…');
    }
    format!("\"{out}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a7_every_template_has_text_and_html_and_escapes_values() {
        let b = Branding {
            product: "Acme <Desk>".into(),
            link_ttl_minutes: 30,
        };
        let link = "https://a.example/verify-email#token=bml_x&y";
        for t in [
            Template::VerifyEmail { link },
            Template::ResetPassword { link },
            Template::AlreadyRegistered,
            Template::LicenseRevoke {
                link,
                product: "Acme <Desk>".into(),
            },
            // The license key is the secret of its mail, placed as a link is.
            Template::LicenseIssued {
                key: "BSTL1.x&y",
                product: "Acme <Desk>".into(),
            },
            Template::LicenseFrozen {
                product: "Acme <Desk>".into(),
            },
        ] {
            let m = t.render(&b, "ada@example.com");
            assert!(!m.subject.is_empty() && !m.text.is_empty());
            assert!(m.html.contains("Acme &lt;Desk&gt;") && !m.html.contains("<Desk>"));
            let has_link = !matches!(
                t,
                Template::AlreadyRegistered | Template::LicenseFrozen { .. }
            );
            if let Template::LicenseIssued { key, .. } = t {
                assert_eq!(m.text.matches(key).count(), 1);
                assert_eq!(m.html.matches("BSTL1.x&amp;y").count(), 1, "a key is text");
                continue;
            }
            assert_eq!(m.text.matches(link).count(), usize::from(has_link));
            assert_eq!(
                m.html.matches("bml_x&amp;y").count(),
                if has_link { 2 } else { 0 },
                "the link appears once, as href and text"
            );
        }
    }
}

#[cfg(test)]
mod org_text {
    use super::*;

    /// An org names its product or itself; that text never reaches a subject line and is quoted,
    /// clipped and stripped of control characters in the body.
    #[test]
    fn a7_org_controlled_names_stay_out_of_subjects_and_are_quoted_as_data() {
        let b = Branding {
            product: "Bastion".into(),
            link_ttl_minutes: 30,
        };
        let evil = format!(
            "URGENT: reset your bank password\r\nBcc: x@y {}",
            "z".repeat(200)
        );
        let link = "https://a.example/x#token=bml_1";
        for t in [
            Template::OrgInvite {
                link,
                org_name: evil.clone(),
                level: "user",
            },
            Template::LicenseIssued {
                key: "BSTL1.k",
                product: evil.clone(),
            },
            Template::LicenseFrozen {
                product: evil.clone(),
            },
            Template::LicenseRevoke {
                link,
                product: evil.clone(),
            },
        ] {
            let m = t.render(&b, "ada@example.com");
            assert!(!m.subject.contains("URGENT"), "{}", m.subject);
            assert!(
                m.text.contains("\"URGENT: reset your bank password"),
                "{}",
                m.text
            );
            assert!(
                !m.text.contains("\r\nBcc"),
                "control characters are dropped"
            );
            assert!(
                !m.text.contains(&"z".repeat(81)),
                "clipped to 80 characters"
            );
        }
    }
}
