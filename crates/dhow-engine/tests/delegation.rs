//! Delegated checks (docs/agents.md): the delegations people grant, each with its test: the
//! whole of a user's permission delegated to an assistant, a sub-agent that receives less
//! (view, not edit), a delegation limited to one folder (through a delegate set, and not
//! leaking another user's grant to a shared agent), a time-boxed delegation, a revocation, a
//! delegation guarded by a caveat whose context reaches every hop; chains refused (too deep,
//! repeated, the principal as actor, a wildcard); proofs per hop naming the first link that
//! denies; LookupResources with a chain.

use std::sync::Arc;

use dhow_engine::{
    CaveatContext, ChainLink, ChainProof, CheckRequest, DelegatedCheck, DelegatedResult, Engine,
    Error, Options, Permissionship, Step,
};
use dhow_tuples::{parse_relationship, parse_subject, MemStore, ObjectRef, Timestamp, WriteOp};

const SCHEMA: &str = r#"
use expiration

caveat for_task(task string, allowed_task string) {
    task == allowed_task
}

definition user {
    /// Agents the user lets act for it wherever it grants "my delegates" something.
    relation delegate: agent | agent with expiration
}

definition agent {
    /// Acts for these with everything they may do.
    relation delegator: user | agent | user with expiration | user with for_task
    /// Acts for these, to read only.
    relation reader_for: user | agent
    /// Sub-agents it lets act for it wherever it grants "my delegates" something.
    relation delegate: agent
    permission view = delegator + reader_for
    permission edit = delegator
}

definition folder {
    relation parent: folder
    relation viewer: user | user#delegate | agent#delegate | user#delegate with expiration
    relation editor: user
    permission view = viewer + editor + parent->view
    permission edit = editor + parent->edit
}

definition document {
    relation folder: folder
    relation owner: user
    relation banned: user
    permission view = (owner + folder->view) - banned
    permission edit = (owner + folder->edit) - banned
}
"#;

const NOW: &str = "2030-06-01T00:00:00Z";

fn now() -> Timestamp {
    Timestamp::parse_rfc3339(NOW).unwrap()
}

struct World {
    engine: Engine,
    store: MemStore,
}

impl World {
    fn new(rels: &[&str]) -> World {
        let schema = dhow_schema::compile(SCHEMA).expect("schema compiles");
        let mut w = World {
            engine: Engine::new(Arc::new(schema)),
            store: MemStore::new(),
        };
        w.write(rels);
        w
    }

    fn write(&mut self, rels: &[&str]) {
        let ops: Vec<WriteOp> = rels
            .iter()
            .map(|r| {
                let r = parse_relationship(r).unwrap();
                self.engine
                    .validate_relationship(&r)
                    .unwrap_or_else(|e| panic!("{r}: {e}"));
                WriteOp::Touch(r)
            })
            .collect();
        self.store.write(&ops).unwrap();
    }

    fn delete(&mut self, rel: &str) {
        let r = parse_relationship(rel).unwrap();
        self.store.write(&[WriteOp::Delete(r)]).unwrap();
    }

    fn run(&self, q: &DelegatedCheck, opts: Options) -> Result<DelegatedResult, Error> {
        self.engine.check_delegated(&self.store.latest(), q, opts)
    }

    /// The answer, checked against the same check with proofs (the same answer, and every
    /// hop evaluated).
    fn answer(&self, q: &DelegatedCheck, context: Option<&str>) -> Permissionship {
        let mut opts = Options::at(now());
        if let Some(c) = context {
            opts = opts.with_context(CaveatContext::from_json(c).unwrap());
        }
        let plain = self
            .run(q, opts.clone())
            .unwrap_or_else(|e| panic!("{q:?}: {e}"));
        let explained = self.run(q, opts.with_explain()).unwrap();
        assert_eq!(plain.permissionship, explained.permissionship);
        assert_eq!(plain.denied_at, explained.denied_at);
        assert!(explained.proof.is_some());
        assert_eq!(explained.actor_proofs.len(), q.actors.len());
        plain.permissionship
    }
}

/// `document:x#view` for `user:alice` by `agent:a, agent:b` (outermost first).
fn q(check: &str, actors: &[&str]) -> DelegatedCheck {
    let (left, subject) = check.split_once('@').unwrap();
    let (res, perm) = left.split_once('#').unwrap();
    let (t, id) = res.split_once(':').unwrap();
    let c = CheckRequest::new(ObjectRef::new(t, id), perm, parse_subject(subject).unwrap());
    let actors = actors
        .iter()
        .map(|a| {
            let (t, id) = a.split_once(':').unwrap();
            ObjectRef::new(t, id)
        })
        .collect();
    DelegatedCheck::new(c, actors)
}

const ALLOWED: Permissionship = Permissionship::Allowed;
const DENIED: Permissionship = Permissionship::Denied;

/// Alice owns the plan and the notes (in folder private) and may view the budget (in folder
/// shared, which bob shares with her).
const BASE: &[&str] = &[
    "document:plan#owner@user:alice",
    "document:notes#owner@user:alice",
    "document:notes#folder@folder:private",
    "document:budget#folder@folder:shared",
    "folder:shared#editor@user:bob",
    "folder:shared#viewer@user:alice",
    "document:secret#owner@user:bob",
];

#[test]
fn an_assistant_acts_with_everything_its_user_may_do_and_nothing_more() {
    let w = World::new(&[BASE, &["agent:assistant#delegator@user:alice"]].concat());
    for doc in ["plan", "notes", "budget"] {
        let check = format!("document:{doc}#view@user:alice");
        assert_eq!(
            w.answer(&q(&check, &["agent:assistant"]), None),
            ALLOWED,
            "{doc}"
        );
    }
    assert_eq!(
        w.answer(
            &q("document:plan#edit@user:alice", &["agent:assistant"]),
            None
        ),
        ALLOWED
    );
    // Never more than alice: bob's secret, and the budget's edit (only bob edits shared).
    for check in [
        "document:secret#view@user:alice",
        "document:budget#edit@user:alice",
    ] {
        let r = w
            .run(&q(check, &["agent:assistant"]), Options::at(now()))
            .unwrap();
        assert_eq!(r.permissionship, DENIED, "{check}");
        assert_eq!(r.denied_at, Some(ChainLink::Principal), "{check}");
    }
    // Not for bob, who delegated nothing.
    let r = w
        .run(
            &q("document:secret#view@user:bob", &["agent:assistant"]),
            Options::at(now()),
        )
        .unwrap();
    assert_eq!(r.denied_at, Some(ChainLink::Actor(0)));
}

#[test]
fn a_sub_agent_receives_less_than_its_parent() {
    let w = World::new(
        &[
            BASE,
            &[
                "agent:assistant#delegator@user:alice",
                "agent:researcher#reader_for@agent:assistant",
            ],
        ]
        .concat(),
    );
    let chain = ["agent:researcher", "agent:assistant"];
    assert_eq!(
        w.answer(&q("document:plan#view@user:alice", &chain), None),
        ALLOWED
    );
    // The researcher reads for the assistant but may not edit: its hop denies.
    let r = w
        .run(
            &q("document:plan#edit@user:alice", &chain),
            Options::at(now()).with_explain(),
        )
        .unwrap();
    assert_eq!(r.permissionship, DENIED);
    assert_eq!(r.denied_at, Some(ChainLink::Actor(0)));
    assert!(r.actor_proofs[1].allowed, "the assistant's own hop holds");
    assert!(!r.actor_proofs[0].allowed);
    // The researcher cannot skip its parent: it acts for the assistant, not for alice.
    assert_eq!(
        w.answer(
            &q("document:plan#view@user:alice", &["agent:researcher"]),
            None
        ),
        DENIED
    );
}

#[test]
fn a_delegation_limited_to_one_folder_reaches_nothing_else() {
    // Alice lets her delegates view folder private only; the assistant is her delegate.
    let mut w = World::new(
        &[
            BASE,
            &[
                "user:alice#delegate@agent:assistant",
                "folder:private#viewer@user:alice#delegate",
            ],
        ]
        .concat(),
    );
    let a = ["agent:assistant"];
    assert_eq!(
        w.answer(&q("document:notes#view@user:alice", &a), None),
        ALLOWED
    );
    // Alice may view the plan and the budget; her assistant may not.
    for doc in ["plan", "budget"] {
        let check = format!("document:{doc}#view@user:alice");
        assert_eq!(w.answer(&q(&check, &a), None), DENIED, "{doc}");
    }
    // View, not edit: the delegate set has view on the folder only.
    assert_eq!(
        w.answer(&q("document:notes#edit@user:alice", &a), None),
        DENIED
    );
    // Bob uses the same assistant and lets his delegates view folder shared. That grant is
    // bob's: acting for alice, the assistant still cannot read the budget (which alice may).
    w.write(&[
        "user:bob#delegate@agent:assistant",
        "folder:shared#viewer@user:bob#delegate",
    ]);
    assert_eq!(
        w.answer(&q("document:budget#view@user:alice", &a), None),
        DENIED
    );
    assert_eq!(
        w.answer(&q("document:budget#view@user:bob", &a), None),
        ALLOWED
    );
    // The lookup an agent's retrieval step filters by: exactly the notes.
    let found = w
        .engine
        .lookup_resources_delegated(
            &w.store.latest(),
            "document",
            "view",
            &parse_subject("user:alice").unwrap(),
            &[ObjectRef::new("agent", "assistant")],
            Options::at(now()),
        )
        .unwrap();
    let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["notes"]);
    // The proof of the hop names the delegate set and both of its parts.
    let r = w
        .run(
            &q("document:notes#view@user:alice", &a),
            Options::at(now()).with_explain(),
        )
        .unwrap();
    let hop = &r.actor_proofs[0];
    assert!(matches!(hop.step, Step::Hop { .. }));
    let set = &hop.children[0];
    assert_eq!(
        set.step,
        Step::DelegateSet {
            subject_set: parse_subject("user:alice#delegate").unwrap()
        }
    );
    assert_eq!(set.children.len(), 2);
    let text = ChainProof {
        request: &q("document:notes#view@user:alice", &a),
        result: &r,
    }
    .to_string();
    assert!(
        text.contains("hop 1: actors[0] agent:assistant acting for user:alice"),
        "{text}"
    );
    assert!(text.contains("user:alice#delegate"), "{text}");
}

#[test]
fn a_sub_agent_limited_to_a_folder_by_its_parent() {
    let w = World::new(
        &[
            BASE,
            &[
                "agent:assistant#delegator@user:alice",
                "agent:assistant#delegate@agent:filer",
                "folder:private#viewer@agent:assistant#delegate",
            ],
        ]
        .concat(),
    );
    let chain = ["agent:filer", "agent:assistant"];
    assert_eq!(
        w.answer(&q("document:notes#view@user:alice", &chain), None),
        ALLOWED
    );
    assert_eq!(
        w.answer(&q("document:plan#view@user:alice", &chain), None),
        DENIED
    );
}

#[test]
fn a_time_boxed_delegation_ends_at_its_expiration() {
    let w = World::new(
        &[
            BASE,
            &[
                "agent:assistant#delegator@user:alice[expiration:2030-06-01T12:00:00Z]",
                "user:alice#delegate@agent:filer[expiration:2030-05-01T00:00:00Z]",
                "folder:private#viewer@user:alice#delegate",
            ],
        ]
        .concat(),
    );
    let check = q("document:plan#view@user:alice", &["agent:assistant"]);
    assert_eq!(w.answer(&check, None), ALLOWED);
    let later = Options::at(Timestamp::parse_rfc3339("2030-06-01T12:00:00Z").unwrap());
    let r = w.run(&check, later.with_explain()).unwrap();
    assert_eq!(r.permissionship, DENIED);
    assert_eq!(r.denied_at, Some(ChainLink::Actor(0)));
    // The filer's folder delegation expired a month ago.
    assert_eq!(
        w.answer(&q("document:notes#view@user:alice", &["agent:filer"]), None),
        DENIED
    );
}

#[test]
fn revoking_a_middle_hop_stops_the_chain_below_it() {
    let mut w = World::new(
        &[
            BASE,
            &[
                "agent:assistant#delegator@user:alice",
                "agent:researcher#delegator@agent:assistant",
                "agent:fetcher#reader_for@agent:researcher",
            ],
        ]
        .concat(),
    );
    let chain = ["agent:fetcher", "agent:researcher", "agent:assistant"];
    let check = q("document:plan#view@user:alice", &chain);
    assert_eq!(w.answer(&check, None), ALLOWED);
    w.delete("agent:researcher#delegator@agent:assistant");
    let r = w.run(&check, Options::at(now()).with_explain()).unwrap();
    assert_eq!(r.permissionship, DENIED);
    // The researcher's hop (actors[1]) is the first, from alice outward, that denies; the
    // fetcher's own hop still holds but cannot help.
    assert_eq!(r.denied_at, Some(ChainLink::Actor(1)));
    assert!(r.actor_proofs[2].allowed && !r.actor_proofs[1].allowed && r.actor_proofs[0].allowed);
    let text = ChainProof {
        request: &check,
        result: &r,
    }
    .to_string();
    assert!(
        text.starts_with("✗ document:plan#view: agent:fetcher for agent:researcher for agent:assistant for user:alice"),
        "{text}"
    );
    let marked: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("first link that denies"))
        .collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(marked[0].contains("actors[1] agent:researcher"), "{text}");
    // Without proofs the evaluation stops at that hop and says the same.
    let r = w.run(&check, Options::at(now())).unwrap();
    assert_eq!(r.denied_at, Some(ChainLink::Actor(1)));
    assert!(r.actor_proofs.is_empty());
}

#[test]
fn a_caveated_delegation_sees_the_request_context_at_every_hop() {
    let w = World::new(
        &[
            BASE,
            &[
                r#"agent:summariser#delegator@user:alice[for_task:{"allowed_task":"summarise"}]"#,
                "agent:helper#reader_for@agent:summariser",
            ],
        ]
        .concat(),
    );
    let chain = ["agent:helper", "agent:summariser"];
    let check = q("document:plan#view@user:alice", &chain);
    assert_eq!(w.answer(&check, Some(r#"{"task":"summarise"}"#)), ALLOWED);
    assert_eq!(w.answer(&check, Some(r#"{"task":"delete"}"#)), DENIED);
    assert_eq!(
        w.answer(&check, None),
        Permissionship::Conditional {
            missing: vec!["task".into()]
        }
    );
    // The caveat step shows the values it saw.
    let opts = Options::at(now())
        .with_context(CaveatContext::from_json(r#"{"task":"summarise"}"#).unwrap())
        .with_explain();
    let r = w.run(&check, opts).unwrap();
    let caveats = r.actor_proofs[1].caveats();
    assert_eq!(caveats.len(), 1);
    assert!(caveats[0].allowed);
    // A per-check context wins over the request's.
    let mut per_check = check.clone();
    per_check.check.context = Some(CaveatContext::from_json(r#"{"task":"delete"}"#).unwrap());
    let opts = Options::at(now())
        .with_context(CaveatContext::from_json(r#"{"task":"summarise"}"#).unwrap());
    assert_eq!(w.run(&per_check, opts).unwrap().permissionship, DENIED);
}

#[test]
fn chains_that_are_refused() {
    let w = World::new(&[BASE, &["agent:a#delegator@user:alice"]].concat());
    let invalid = |actors: &[&str], index: Option<usize>| {
        let e = w
            .run(
                &q("document:plan#view@user:alice", actors),
                Options::at(now()),
            )
            .unwrap_err();
        match e {
            Error::InvalidChain { index: i, .. } => assert_eq!(i, index, "{actors:?}: {e}"),
            e => panic!("{actors:?}: {e}"),
        }
    };
    let nine: Vec<String> = (0..9).map(|i| format!("agent:a{i}")).collect();
    let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
    invalid(&nine, None);
    invalid(&["agent:a", "agent:b", "agent:a"], Some(2));
    invalid(&["user:alice"], Some(0));
    invalid(&["agent:*"], Some(0));
    // Eight is the default limit; a lower one is honoured.
    let eight = &nine[..8];
    assert!(w
        .run(
            &q("document:plan#view@user:alice", eight),
            Options::at(now())
        )
        .is_ok());
    let opts = Options {
        max_actors: 2,
        ..Options::at(now())
    };
    assert!(matches!(
        w.run(&q("document:plan#view@user:alice", &nine[..3]), opts),
        Err(Error::InvalidChain { index: None, .. })
    ));
    // An actor of a type the schema does not define.
    assert!(matches!(
        w.run(
            &q("document:plan#view@user:alice", &["robot:x"]),
            Options::at(now())
        ),
        Err(Error::UnknownType(t)) if t == "robot"
    ));
    // CheckBulk: a refused chain fails its own item only.
    let results = w.engine.check_bulk_delegated(
        &w.store.latest(),
        &[
            q("document:plan#view@user:alice", &["agent:a", "agent:a"]),
            q("document:plan#view@user:alice", &["agent:a"]),
        ],
        Options::at(now()),
    );
    assert!(matches!(results[0], Err(Error::InvalidChain { .. })));
    assert!(results[1].as_ref().unwrap().allowed);
}

#[test]
fn an_actor_type_without_the_permission_cannot_receive_it() {
    // `agent` declares view and edit; a check of a relation it lacks denies at the hop.
    let w = World::new(&[BASE, &["agent:a#delegator@user:alice"]].concat());
    let r = w
        .run(
            &q("document:plan#owner@user:alice", &["agent:a"]),
            Options::at(now()).with_explain(),
        )
        .unwrap();
    assert_eq!(r.denied_at, Some(ChainLink::Actor(0)));
    // Only alice's delegate set was tried (and it has no `owner` on the plan).
    let hop = &r.actor_proofs[0];
    assert_eq!(hop.children.len(), 1);
    assert!(matches!(hop.children[0].step, Step::DelegateSet { .. }));
}
