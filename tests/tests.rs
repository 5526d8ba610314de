//! Keyfleet's integration tests: one binary, one module per area, shared helpers in
//! `harness`.

/// The operator API's transport: TLS from policy, client certificates, the server certificate.
mod api_tls;
/// The tamper-evident audit log through the binary on the quickstart.
mod audit_log;
/// The browser test harness: headless Chromium over WebDriver, client certificates, artifacts.
mod browser_harness;
/// The Entrust CA Gateway connector against the emulator.
mod cagw;
/// The cfssl connector against a real `cfssl serve`.
mod cfssl;
/// The controller `keyfleet run` against the real binary.
mod controller;
/// `keyfleet run` and a policy set with its data file: never half a commit (issue 14).
mod controller_policy_set;
/// `keyfleet run` woken by LDAP polling and PC/SC card events.
mod controller_watchers;
/// CRL publication by `apply` and the controller (crlPublish on a local CA).
mod crl;
/// Saved plans (`plan -out`, `apply FILE`) and `--format markdown` on the quickstart.
mod gitops_plan;
/// `keyfleet test` (PolicyTests, JUnit), completions, man, alerts, dashboard (issue 19).
mod gitops_test;
/// Helpers: run the built binary, build throwaway policy directories.
mod harness;
/// Card incidents: lost, damaged, forgotten and found cards, replacements, temporary cards.
mod incidents;
/// Card incidents over PC/SC: a replacement onto a second card, an offline unblock code.
mod incidents_pcsc;
/// scripts/install-deps against a fake apt: policy-rc.d is put back as it was.
mod install_deps;
/// The key history on a PIV card over pcscd + vpcd: reissues, a replacement, OpenSC decrypts.
mod key_history;
/// Archived encryption keys: `keys list`, recovery to PKCS#12 under two-person control.
mod keys;
/// The ldap Directory kind against real slapd (and Samba AD).
mod ldap;
/// The ldap Directory kind: timeouts, assignment filters, Active Directory primary groups.
mod ldap_gaps;
/// The operator API end to end: card logins, roles, approvals, audit, revocation.
mod operator_api;
/// The CLI as a remote operator client: `whoami --server` with the card as TLS identity.
mod operator_client;
/// Roles with directory groups as members, from a real slapd (nested groups).
mod operators_ldap;
/// Operator requests on this machine: the system owner, the control socket.
mod operators_local;
/// PIV cards over pcscd + vpcd: issuance, OpenSC, PIN blocking, unblock, removal, garbage.
mod piv;
/// PIV personalisation over pcscd + vpcd: retries, random management keys, pulled cards.
mod piv_personalise;
/// PIV retired key-management slots over pcscd + vpcd: OpenSC, `keyfleet cards`, decryption.
mod piv_retired;
/// PKCS#11 tokens on SoftHSM2: issuance, interoperability, PINs, recovery, HSM-held keys.
mod pkcs11;
/// Policy loading and validation through `keyfleet validate` / `keyfleet schema`.
mod policy;
/// The holder's workstation: `keyfleet self-service` over pcscd + vpcd and `run --api`.
mod self_service;
/// The reconcile spine end to end on examples/quickstart (local CA, virtual cards).
mod spine;
/// Virtual cards: a changed holder PIN waits for the holder, no slot touched; retries set.
mod virtual_holder;
