//! Who a delegated check is for: the principal and the chain of actors of a request, from
//! its fields or from the caller's JWT (docs/agents.md, "Where the chain comes from").
//!
//! A token whose issuer has `delegation` settings carries a chain (`sub` → principal, nested
//! `act` → actors). Its caller may leave `subject` and `actors` empty and they are taken from
//! the token; whatever it does give must equal the token's, or the call is refused with
//! PERMISSION_DENIED `DELEGATION_CHAIN_MISMATCH`: a caller cannot act for someone its token
//! does not say it acts for, nor drop the actors its token names. Other callers (preshared
//! keys, certificates, tokens of issuers without `delegation`) give the chain explicitly, as
//! a trusted gateway that already verified it would.

use dhow_proto::v1 as pb;
use dhow_tuples::{ObjectRef, Subject};
use tonic::Code;

use crate::auth::jwt::TokenChain;
use crate::auth::{Credential, Identity};
use crate::error::{reason, ApiError, ApiResult};
use dhow_wire::join;

/// The chain the caller's credential carries: `None` when it carries none, `Err` when its
/// claims do not map to objects.
pub fn token_chain(id: Option<&Identity>) -> Option<Result<&TokenChain, &str>> {
    match id.map(|i| &i.credential) {
        Some(Credential::Jwt(v)) => v.chain.as_ref().map(|c| c.as_ref().map_err(|e| e.as_str())),
        _ => None,
    }
}

/// The principal and actors of one check or lookup: the request's `subject` and `actors`
/// (fields under `prefix`), reconciled with the token's chain.
pub fn resolve(
    prefix: &str,
    subject: Option<&pb::SubjectReference>,
    actors: &[pb::SubjectReference],
    token: Option<Result<&TokenChain, &str>>,
) -> ApiResult<(Subject, Vec<ObjectRef>)> {
    let sfield = join(prefix, "subject");
    let afield = join(prefix, "actors");
    let token = match token {
        None => {
            let s = dhow_wire::subject(subject, &sfield, false)?;
            let a = dhow_wire::actors(actors, &afield)?;
            return Ok((s, a));
        }
        Some(Err(why)) => {
            return Err(ApiError::new(
                Code::PermissionDenied,
                reason::DELEGATION_CLAIMS_INVALID,
                format!("the caller's token does not name a principal and actors: {why}"),
            ))
        }
        Some(Ok(t)) => t,
    };
    if let Some(s) = subject {
        let s = dhow_wire::subject(Some(s), &sfield, false)?;
        if s != token.principal {
            return Err(mismatch(format!(
                "the caller's token acts for {}, not {s}",
                token.principal
            ))
            .at(sfield));
        }
    }
    if !actors.is_empty() {
        let a = dhow_wire::actors(actors, &afield)?;
        if a != token.actors {
            let show = |v: &[ObjectRef]| {
                let names: Vec<String> = v.iter().map(|o| o.to_string()).collect();
                format!("[{}]", names.join(", "))
            };
            return Err(mismatch(format!(
                "the caller's token carries the chain {}, not {}",
                show(&token.actors),
                show(&a)
            ))
            .at(afield));
        }
    }
    Ok((token.principal.clone(), token.actors.clone()))
}

fn mismatch(message: String) -> ApiError {
    ApiError::new(
        Code::PermissionDenied,
        reason::DELEGATION_CHAIN_MISMATCH,
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhow_wire::{actors_pb, subject_pb};

    fn chain() -> TokenChain {
        TokenChain {
            principal: Subject::object("user", "alice"),
            actors: vec![
                ObjectRef::new("agent", "sub"),
                ObjectRef::new("agent", "top"),
            ],
        }
    }

    #[test]
    fn unset_fields_come_from_the_token_and_set_ones_must_agree() {
        let t = chain();
        let (s, a) = resolve("", None, &[], Some(Ok(&t))).unwrap();
        assert_eq!((s, a), (t.principal.clone(), t.actors.clone()));
        let alice = subject_pb(&t.principal);
        let (_, a) = resolve("", Some(&alice), &[], Some(Ok(&t))).unwrap();
        assert_eq!(a, t.actors, "an agent cannot drop its chain");
        resolve("", Some(&alice), &actors_pb(&t.actors), Some(Ok(&t))).unwrap();
        let bob = subject_pb(&Subject::object("user", "bob"));
        let e = resolve("items[2]", Some(&bob), &[], Some(Ok(&t))).unwrap_err();
        assert_eq!(e.reason, reason::DELEGATION_CHAIN_MISMATCH);
        assert_eq!(e.field.as_deref(), Some("items[2].subject"));
        let fewer = actors_pb(&t.actors[..1]);
        let e = resolve("", None, &fewer, Some(Ok(&t))).unwrap_err();
        assert_eq!(e.code, Code::PermissionDenied);
        assert_eq!(e.field.as_deref(), Some("actors"));
        let e = resolve("", None, &[], Some(Err("no sub"))).unwrap_err();
        assert_eq!(e.reason, reason::DELEGATION_CLAIMS_INVALID);
    }

    #[test]
    fn without_a_token_chain_the_request_says_it() {
        let e = resolve("", None, &[], None).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        let alice = subject_pb(&Subject::object("user", "alice"));
        let (_, a) = resolve("", Some(&alice), &[], None).unwrap();
        assert!(a.is_empty());
    }
}
