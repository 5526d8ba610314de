//! What an enrolment request sends for a profile: its subject variables and SANs.

use serde_json::{Value, json};

use super::wire::WireRequirement;
use crate::ca::CaError;
use crate::names::{DistinguishedName, SanValue};

/// The DN attribute a subject variable name stands for (`cn` → `CN`, `givenName` → `GN`).
fn variable_attribute(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "cn" | "commonname" => "CN",
        "o" | "organization" | "organizationname" => "O",
        "ou" | "organizationalunit" | "organizationalunitname" => "OU",
        "c" | "country" | "countryname" => "C",
        "l" | "locality" | "localityname" => "L",
        "st" | "s" | "state" | "stateorprovincename" => "ST",
        "e" | "email" | "emailaddress" => "E",
        "serialnumber" => "SERIALNUMBER",
        "gn" | "givenname" => "GN",
        "sn" | "surname" => "SN",
        "dc" | "domaincomponent" => "DC",
        "uid" | "userid" => "UID",
        _ => return None,
    })
}

/// The `subjectVariables` a profile asks for, filled from `subject`. Fails when a required
/// variable cannot be filled.
pub(super) fn subject_variables(
    profile: &str,
    reqs: &[WireRequirement],
    subject: &DistinguishedName,
) -> Result<Vec<Value>, CaError> {
    let mut out = Vec::new();
    for r in reqs {
        let name = if r.name.is_empty() { &r.kind } else { &r.name };
        let value = variable_attribute(name).and_then(|a| subject.get(a));
        match value {
            Some(v) => out.push(json!({"type": name, "value": v})),
            None if r.required => {
                return Err(CaError::InvalidName(format!(
                    "profile {profile:?} requires the subject variable {name:?}, which the \
                     template's subject ({subject}) does not provide"
                )));
            }
            None => {}
        }
    }
    Ok(out)
}

/// The `subjectAltNames` the API names, and whether the CSR carries SANs it does not name
/// (the UPN), which then need `useSANFromCSR`.
pub(super) fn subject_alt_names(sans: &[SanValue]) -> (Vec<Value>, bool) {
    let mut out = Vec::new();
    let mut from_csr = false;
    for s in sans {
        let (kind, v) = match s {
            SanValue::Email(v) => ("rfc822Name", v),
            SanValue::Dns(v) => ("dNSName", v),
            SanValue::Uri(v) => ("uniformResourceIdentifier", v),
            SanValue::Upn(_) => {
                from_csr = true;
                continue;
            }
        };
        out.push(json!({"type": kind, "value": v}));
    }
    (out, from_csr)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{subject_alt_names, subject_variables};
    use crate::ca::entrust::wire::WireRequirement;
    use crate::names::{DistinguishedName, SanValue};
    #[test]
    fn subject_variables_follow_requirements() {
        let dn = DistinguishedName::parse("CN=Alice Doe,OU=Staff,O=Example").unwrap();
        let reqs = vec![
            WireRequirement {
                name: "cn".into(),
                required: true,
                ..Default::default()
            },
            WireRequirement {
                name: "O".into(),
                required: false,
                ..Default::default()
            },
            WireRequirement {
                name: "c".into(),
                required: false,
                ..Default::default()
            },
        ];
        let v = subject_variables("p", &reqs, &dn).unwrap();
        assert_eq!(
            v,
            vec![
                json!({"type": "cn", "value": "Alice Doe"}),
                json!({"type": "O", "value": "Example"}),
            ]
        );
        let strict = vec![WireRequirement {
            name: "c".into(),
            required: true,
            ..Default::default()
        }];
        let e = subject_variables("p", &strict, &dn).unwrap_err();
        assert!(e.to_string().contains("\"c\""), "{e}");
    }

    #[test]
    fn upn_goes_through_the_csr() {
        let (sans, from_csr) = subject_alt_names(&[
            SanValue::Email("a@example.com".into()),
            SanValue::Upn("a@corp.example.com".into()),
        ]);
        assert!(from_csr);
        assert_eq!(
            sans,
            vec![json!({"type": "rfc822Name", "value": "a@example.com"})]
        );
    }
}
