#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The conversation store against real databases: every test body runs on SQLite and on
//! PostgreSQL.

use std::sync::Arc;

use switchboard_conversations::MIGRATIONS;
use switchboard_conversations::domain::{MessageOutcome, MessageStatus, PageRequest, Principal, Role, UsageRecord};
use switchboard_conversations::store::{
    Claim, ClaimTerms, ConversationFilter, ConversationStore, IdempotencyStore, KEPT_FOR_CLOSINGS, KEPT_FOR_OPENINGS,
    NewMessage, SqlStore, TurnOpening, UpstreamConversation, UpstreamMessage,
};
use switchboard_kit::db::Db;
use switchboard_test_support::db::{self, TestDb};

struct Fixture {
    store: Arc<dyn ConversationStore>,
    idempotency: Arc<dyn IdempotencyStore>,
    db: Db,
    _test_db: TestDb,
}

async fn open(test_db: TestDb) -> Fixture {
    let db = Db::connect(&test_db.url, "DATABASE_URL").await.unwrap();
    db.migrate(&MIGRATIONS).await.unwrap();
    let sql = Arc::new(SqlStore::new(db.clone()));
    Fixture { store: sql.clone(), idempotency: sql, db, _test_db: test_db }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::open(super::db::sqlite()).await).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::open(super::db::postgres().await).await).await })*
        }
    };
}

on_both_backends!(
    messages_come_back_oldest_first_across_pages,
    another_principals_conversation_is_invisible,
    conversations_list_newest_first_with_paging_and_date_filters,
    a_tenant_lists_every_users_conversations_and_no_other_tenants,
    finished_messages_keep_their_outcome_and_failed_ones_leave_the_context,
    clearing_history_removes_only_the_owners_conversations,
    usage_records_are_written_in_one_batch,
    migrations_can_run_twice,
    answers_left_in_progress_are_closed_by_the_sweeper,
    idempotency_keys_replay_refuse_and_expire,
    upstream_conversations_and_messages_are_upserted_once,
    a_turn_lease_is_exclusive_owned_and_expires,
    a_turn_opens_leased_in_one_commit_and_closes_releasing_it,
    conversations_and_messages_get_whole_number_aliases_in_creation_order,
    turns_opened_and_closed_together_each_get_their_own_rows_and_lease,
    a_turn_that_fails_does_not_fail_the_turns_committed_with_it,
);

fn alice() -> Principal {
    Principal::parse("drillquiz", "alice").unwrap()
}

fn user_message(conversation_id: &str, content: &str) -> NewMessage {
    NewMessage {
        conversation_id: conversation_id.to_owned(),
        role: Role::User,
        content: content.to_owned(),
        status: MessageStatus::Complete,
        model: String::new(),
    }
}

async fn messages_come_back_oldest_first_across_pages(f: Fixture) {
    let conversation = f.store.create_conversation(&alice(), "t").await.unwrap();
    for i in 0..7 {
        f.store.append_message(user_message(&conversation.id, &format!("m{i}"))).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = f.store.list_messages(&conversation.id, &PageRequest { size: 3, cursor }).await.unwrap();
        seen.extend(page.items.into_iter().map(|m| m.content));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("m{i}")).collect::<Vec<_>>());
    let stored = f.store.get_conversation(&alice(), &conversation.id).await.unwrap().unwrap();
    assert_eq!(stored.message_count, 7);
    assert!(stored.updated_at >= stored.created_at);
}

async fn another_principals_conversation_is_invisible(f: Fixture) {
    let conversation = f.store.create_conversation(&alice(), "secret").await.unwrap();
    let bob = Principal::parse("drillquiz", "bob").unwrap();
    let other_tenant = Principal::parse("cointutor", "alice").unwrap();
    assert!(f.store.get_conversation(&bob, &conversation.id).await.unwrap().is_none());
    assert!(f.store.get_conversation(&other_tenant, &conversation.id).await.unwrap().is_none());
    // By id alone (service credentials check the owner themselves) it is found, with its owner.
    let found = f.store.find_conversation(&conversation.id).await.unwrap().unwrap();
    assert_eq!(found.owner, alice());
    assert!(f.store.find_conversation("no-such-id").await.unwrap().is_none());
    let page = PageRequest { size: 10, cursor: None };
    assert!(f.store.list_conversations(&bob, &ConversationFilter::default(), &page).await.unwrap().items.is_empty());
    assert_eq!(
        f.store.list_conversations(&alice(), &ConversationFilter::default(), &page).await.unwrap().items.len(),
        1
    );
}

async fn conversations_list_newest_first_with_paging_and_date_filters(f: Fixture) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let c = f.store.create_conversation(&alice(), &format!("c{i}")).await.unwrap();
        f.store.append_message(user_message(&c.id, "hi")).await.unwrap();
        ids.push(c.id);
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .store
            .list_conversations(&alice(), &ConversationFilter::default(), &PageRequest { size: 2, cursor })
            .await
            .unwrap();
        listed.extend(page.items.into_iter().map(|c| c.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(listed, ids, "newest first, each exactly once");

    let all = f
        .store
        .list_conversations(&alice(), &ConversationFilter::default(), &PageRequest { size: 10, cursor: None })
        .await
        .unwrap()
        .items;
    let pivot = all[2].updated_at;
    let since = f
        .store
        .list_conversations(
            &alice(),
            &ConversationFilter { from: Some(pivot), to: None },
            &PageRequest { size: 10, cursor: None },
        )
        .await
        .unwrap()
        .items;
    assert!(since.iter().all(|c| c.updated_at >= pivot));
    assert_eq!(since.len(), 3);
    let until = f
        .store
        .list_conversations(
            &alice(),
            &ConversationFilter { from: None, to: Some(pivot - 1) },
            &PageRequest { size: 10, cursor: None },
        )
        .await
        .unwrap()
        .items;
    assert_eq!(until.len(), 2);
}

async fn a_tenant_lists_every_users_conversations_and_no_other_tenants(f: Fixture) {
    let bob = Principal::parse("drillquiz", "bob").unwrap();
    let elsewhere = Principal::parse("cointutor", "alice").unwrap();
    let mut ours = Vec::new();
    for (i, owner) in [alice(), bob.clone(), elsewhere.clone(), alice()].iter().enumerate() {
        let c = f.store.create_conversation(owner, &format!("c{i}")).await.unwrap();
        f.store.append_message(user_message(&c.id, "hi")).await.unwrap();
        if owner.system_id == "drillquiz" {
            ours.push((c.id, owner.user_id.clone()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    ours.reverse();
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .store
            .list_tenant_conversations("drillquiz", &ConversationFilter::default(), &PageRequest { size: 2, cursor })
            .await
            .unwrap();
        listed.extend(page.items.into_iter().map(|c| (c.id, c.owner.user_id)));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, ours, "every user of drillquiz, newest first, none of cointutor");
    let newest = f
        .store
        .list_tenant_conversations("drillquiz", &ConversationFilter::default(), &PageRequest { size: 10, cursor: None })
        .await
        .unwrap()
        .items[0]
        .updated_at;
    let recent = f
        .store
        .list_tenant_conversations(
            "drillquiz",
            &ConversationFilter { from: Some(newest), to: None },
            &PageRequest { size: 10, cursor: None },
        )
        .await
        .unwrap()
        .items;
    assert_eq!(recent.len(), 1, "the date filter applies");
    assert!(
        f.store
            .list_tenant_conversations(
                "nobody",
                &ConversationFilter::default(),
                &PageRequest { size: 10, cursor: None }
            )
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn finished_messages_keep_their_outcome_and_failed_ones_leave_the_context(f: Fixture) {
    let c = f.store.create_conversation(&alice(), "t").await.unwrap();
    f.store.append_message(user_message(&c.id, "question one")).await.unwrap();
    let failed = f
        .store
        .append_message(NewMessage {
            role: Role::Assistant,
            status: MessageStatus::InProgress,
            ..user_message(&c.id, "")
        })
        .await
        .unwrap();
    f.store
        .finish_message(
            &failed.id,
            MessageOutcome {
                status: MessageStatus::Failed,
                content: String::new(),
                model: "gpt-test".into(),
                prompt_tokens: 0,
                completion_tokens: 0,
                error: "upstream answered HTTP 503".into(),
            },
        )
        .await
        .unwrap();
    f.store.append_message(user_message(&c.id, "question two")).await.unwrap();
    let ok = f
        .store
        .append_message(NewMessage {
            role: Role::Assistant,
            status: MessageStatus::InProgress,
            ..user_message(&c.id, "")
        })
        .await
        .unwrap();
    f.store
        .finish_message(
            &ok.id,
            MessageOutcome {
                status: MessageStatus::Complete,
                content: "answer two".into(),
                model: "gpt-test".into(),
                prompt_tokens: 11,
                completion_tokens: 3,
                error: String::new(),
            },
        )
        .await
        .unwrap();

    let all = f.store.list_messages(&c.id, &PageRequest { size: 10, cursor: None }).await.unwrap().items;
    assert_eq!(all.len(), 4);
    assert_eq!(all[1].status, MessageStatus::Failed);
    assert_eq!(all[1].error, "upstream answered HTTP 503");
    assert_eq!((all[3].prompt_tokens, all[3].completion_tokens), (11, 3));

    let context: Vec<String> =
        f.store.recent_messages(&c.id, 10).await.unwrap().into_iter().map(|m| m.content).collect();
    assert_eq!(context, vec!["question one", "question two", "answer two"]);
    let last_two: Vec<String> =
        f.store.recent_messages(&c.id, 2).await.unwrap().into_iter().map(|m| m.content).collect();
    assert_eq!(last_two, vec!["question two", "answer two"]);
}

async fn clearing_history_removes_only_the_owners_conversations(f: Fixture) {
    let bob = Principal::parse("drillquiz", "bob").unwrap();
    let mut alices = Vec::new();
    for owner in [alice(), alice(), bob.clone()] {
        let c = f.store.create_conversation(&owner, "t").await.unwrap();
        f.store.append_message(user_message(&c.id, "hi")).await.unwrap();
        if owner == alice() {
            alices.push(c.id);
        }
    }
    // An idempotent answer of each holds message text: Alice's goes with her history.
    for owner in [alice(), bob.clone()] {
        let claim = ClaimTerms { hash: "h", holder: "t", now: 1, lease_until: 2, expired_before: 0 };
        assert_eq!(f.idempotency.claim(&owner, "k", &claim).await.unwrap(), Claim::New);
        f.idempotency.finish(&owner, "k", "t", b"the answer").await.unwrap();
    }
    let mut deleted = f.store.clear_history(&alice()).await.unwrap();
    deleted.sort();
    alices.sort();
    assert_eq!(deleted, alices);
    let again = ClaimTerms { hash: "h", holder: "t2", now: 3, lease_until: 4, expired_before: 0 };
    assert_eq!(f.idempotency.claim(&alice(), "k", &again).await.unwrap(), Claim::New, "Alice's answer is gone");
    assert_eq!(f.idempotency.claim(&bob, "k", &again).await.unwrap(), Claim::Replay(b"the answer".to_vec()));
    let page = PageRequest { size: 10, cursor: None };
    assert!(
        f.store.list_conversations(&alice(), &ConversationFilter::default(), &page).await.unwrap().items.is_empty()
    );
    let bobs = f.store.list_conversations(&bob, &ConversationFilter::default(), &page).await.unwrap().items;
    assert_eq!(bobs.len(), 1);
    assert_eq!(f.store.list_messages(&bobs[0].id, &page).await.unwrap().items.len(), 1);
}

async fn usage_records_are_written_in_one_batch(f: Fixture) {
    let records: Vec<UsageRecord> = (0..3)
        .map(|i| UsageRecord {
            owner: alice(),
            conversation_id: "c".into(),
            message_id: format!("m{i}"),
            key_id: "k".into(),
            model: "mock".into(),
            provider: "mock".into(),
            prompt_tokens: 10,
            completion_tokens: i,
            latency_ms: 1,
            cost_micros: 0,
            created_at: 1,
        })
        .collect();
    f.store.record_usage(&records).await.unwrap();
    let (count, completion): (i64, i64) = switchboard_kit::db_run!(&f.db, |pool| {
        sqlx::query_as("SELECT COUNT(*), CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) FROM usage_records WHERE system_id = $1")
            .bind("drillquiz")
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert_eq!((count, completion), (3, 3));
}

async fn migrations_can_run_twice(f: Fixture) {
    f.db.migrate(&MIGRATIONS).await.unwrap();
    f.db.ping().await.unwrap();
}

async fn answers_left_in_progress_are_closed_by_the_sweeper(f: Fixture) {
    let c = f.store.create_conversation(&alice(), "t").await.unwrap();
    let empty = f
        .store
        .append_message(NewMessage {
            role: Role::Assistant,
            status: MessageStatus::InProgress,
            ..user_message(&c.id, "")
        })
        .await
        .unwrap();
    let with_text = f
        .store
        .append_message(NewMessage {
            role: Role::Assistant,
            status: MessageStatus::InProgress,
            ..user_message(&c.id, "half an ans")
        })
        .await
        .unwrap();
    let now = switchboard_kit::time::now_ms();
    assert_eq!(f.store.sweep_in_progress(now - 60_000, now).await.unwrap(), 0, "recent turns are left alone");
    assert_eq!(f.store.sweep_in_progress(now + 1, now + 1).await.unwrap(), 2);
    let all = f.store.list_messages(&c.id, &PageRequest { size: 10, cursor: None }).await.unwrap().items;
    let by_id = |id: &str| all.iter().find(|m| m.id == id).unwrap().clone();
    assert_eq!(by_id(&empty.id).status, MessageStatus::Failed);
    assert_eq!(by_id(&with_text.id).status, MessageStatus::Partial);
    assert!(by_id(&with_text.id).error.starts_with("interrupted"));
    assert_eq!(f.store.sweep_in_progress(now + 2, now + 2).await.unwrap(), 0);
}

fn terms<'a>(hash: &'a str, holder: &'a str, now: i64, expired_before: i64) -> ClaimTerms<'a> {
    ClaimTerms { hash, holder, now, lease_until: now + 60_000, expired_before }
}

async fn idempotency_keys_replay_refuse_and_expire(f: Fixture) {
    let me = alice();
    let claim = |who: &Principal, hash: &'static str, holder: &'static str, now: i64, expired: i64| {
        let (store, who) = (f.idempotency.clone(), who.clone());
        async move { store.claim(&who, "k", &terms(hash, holder, now, expired)).await.unwrap() }
    };
    assert_eq!(claim(&me, "h1", "t1", 1_000, 0).await, Claim::New);
    assert_eq!(claim(&me, "h1", "t2", 1_001, 0).await, Claim::InProgress);
    assert_eq!(claim(&me, "h2", "t2", 1_002, 0).await, Claim::Mismatch);
    // Only the holder stores the answer.
    f.idempotency.finish(&me, "k", "t2", b"not mine").await.unwrap();
    assert_eq!(claim(&me, "h1", "t2", 1_002, 0).await, Claim::InProgress);
    f.idempotency.finish(&me, "k", "t1", b"answer").await.unwrap();
    assert_eq!(claim(&me, "h1", "t3", 1_003, 0).await, Claim::Replay(b"answer".to_vec()));
    let bob = Principal::parse("drillquiz", "bob").unwrap();
    assert_eq!(claim(&bob, "h9", "t4", 1_004, 0).await, Claim::New, "keys are per principal");
    // Past its lifetime a key is forgotten.
    assert_eq!(claim(&me, "h2", "t5", 90_000, 50_000).await, Claim::New);
    // A released key can be claimed again; only its holder releases it.
    f.idempotency.release(&bob, "k", "someone-else").await.unwrap();
    assert_eq!(claim(&bob, "h9", "t6", 1_005, 0).await, Claim::InProgress);
    f.idempotency.release(&bob, "k", "t4").await.unwrap();
    assert_eq!(claim(&bob, "h9", "t6", 1_006, 0).await, Claim::New);
    // A claim whose holder died is taken over once its lease has run out (not before).
    assert_eq!(claim(&bob, "h9", "t7", 1_007 + 30_000, 0).await, Claim::InProgress);
    assert_eq!(claim(&bob, "h9", "t7", 1_006 + 60_001, 0).await, Claim::New);
    f.idempotency.finish(&bob, "k", "t7", b"late").await.unwrap();
    assert_eq!(claim(&bob, "h9", "t8", 70_000, 0).await, Claim::Replay(b"late".to_vec()));
}

async fn upstream_conversations_and_messages_are_upserted_once(f: Fixture) {
    let me = alice();
    let upstream =
        UpstreamConversation { id: "dify-1".into(), title: "from dify".into(), created_at: 10, updated_at: 20 };
    let (id, created) = f.store.upsert_upstream_conversation(&me, &upstream).await.unwrap();
    assert!(created);
    let (again, created) = f.store.upsert_upstream_conversation(&me, &upstream).await.unwrap();
    assert_eq!((again.as_str(), created), (id.as_str(), false));
    let message = |id: &str, role, content: &str, at| UpstreamMessage {
        id: id.into(),
        role,
        content: content.into(),
        created_at: at,
    };
    assert!(f.store.upsert_upstream_message(&id, &message("m1:q", Role::User, "q", 30)).await.unwrap());
    assert!(f.store.upsert_upstream_message(&id, &message("m1:a", Role::Assistant, "a", 31)).await.unwrap());
    assert!(!f.store.upsert_upstream_message(&id, &message("m1:q", Role::User, "q", 30)).await.unwrap());
    let stored = f.store.get_conversation(&me, &id).await.unwrap().unwrap();
    assert_eq!((stored.message_count, stored.updated_at, stored.upstream_id.as_deref()), (2, 31, Some("dify-1")));
    assert_eq!(f.store.principals(None).await.unwrap(), vec![me.clone()]);
    assert!(f.store.principals(Some("cointutor")).await.unwrap().is_empty());

    // A turn made through us is linked, so a later sync does not copy it again.
    let c = f.store.create_conversation(&me, "t").await.unwrap();
    let q = f.store.append_message(user_message(&c.id, "hello")).await.unwrap();
    f.store.link_upstream(&c.id, "dify-2", &[(q.id.as_str(), "m2:q".into())]).await.unwrap();
    assert!(!f.store.upsert_upstream_message(&c.id, &message("m2:q", Role::User, "hello", 40)).await.unwrap());
    assert_eq!(f.store.get_conversation(&me, &c.id).await.unwrap().unwrap().upstream_id.as_deref(), Some("dify-2"));
}

async fn a_turn_lease_is_exclusive_owned_and_expires(f: Fixture) {
    let c = f.store.create_conversation(&alice(), "t").await.unwrap();
    let bob = Principal::parse("drillquiz", "bob").unwrap();
    assert!(!f.store.lease_turn(&c.id, &bob, "h-bob", 0, 100).await.unwrap(), "never on someone else's");
    assert!(f.store.lease_turn(&c.id, &alice(), "h1", 0, 100).await.unwrap());
    assert!(!f.store.lease_turn(&c.id, &alice(), "h2", 50, 150).await.unwrap(), "held");
    assert!(f.store.lease_turn(&c.id, &alice(), "h1", 60, 160).await.unwrap(), "renewed by its holder");
    assert!(f.store.lease_turn(&c.id, &alice(), "h2", 161, 261).await.unwrap(), "expired leases are taken over");
    f.store.release_turn(&c.id, "h1").await.unwrap();
    assert!(!f.store.lease_turn(&c.id, &alice(), "h3", 200, 300).await.unwrap(), "only the holder releases");
    f.store.release_turn(&c.id, "h2").await.unwrap();
    assert!(f.store.lease_turn(&c.id, &alice(), "h3", 200, 300).await.unwrap());
}

async fn a_turn_opens_leased_in_one_commit_and_closes_releasing_it(f: Fixture) {
    let alice = alice();
    let opening = |id: &'static str, create: Option<&'static str>, holder: &'static str, now: i64| TurnOpening {
        owner: &alice,
        conversation_id: id,
        create,
        holder,
        now,
        until: now + 100,
        message: "hello",
        model: "m",
    };
    // A new conversation is born holding the lease, with both rows.
    let opened = f.store.open_turn(opening("c-1", Some("greeting"), "h1", 1_000)).await.unwrap().unwrap();
    assert_eq!(opened.conversation.id, "c-1");
    assert_eq!(opened.conversation.title, "greeting");
    assert_eq!(opened.conversation.message_count, 0, "as it was before the turn");
    assert_eq!((opened.user_message.role, opened.user_message.status), (Role::User, MessageStatus::Complete));
    assert_eq!(opened.assistant.status, MessageStatus::InProgress);
    assert!(opened.assistant.number > opened.user_message.number);
    let stored = f.store.get_conversation(&alice, "c-1").await.unwrap().unwrap();
    assert_eq!(stored.message_count, 2);
    assert!(stored.number > 0);

    // While it is held, another holder gets nothing and writes nothing; nor does another user.
    assert!(f.store.open_turn(opening("c-1", None, "h2", 1_050)).await.unwrap().is_none(), "held");
    let bob = Principal::parse("drillquiz", "bob").unwrap();
    let mut bobs = opening("c-1", None, "h-bob", 5_000);
    bobs.owner = &bob;
    assert!(f.store.open_turn(bobs).await.unwrap().is_none(), "never on someone else's");
    let page = f.store.list_messages("c-1", &PageRequest { size: 10, cursor: None }).await.unwrap();
    assert_eq!(page.items.len(), 2);

    // Closing stores the answer and gives the lease back.
    let outcome = MessageOutcome {
        status: MessageStatus::Complete,
        content: "hi".into(),
        model: "m".into(),
        prompt_tokens: 3,
        completion_tokens: 1,
        error: String::new(),
    };
    f.store.close_turn("c-1", &opened.assistant.id, outcome.clone(), "h2").await.unwrap();
    assert!(f.store.open_turn(opening("c-1", None, "h3", 1_060)).await.unwrap().is_none(), "not h2's to give");
    f.store.close_turn("c-1", &opened.assistant.id, outcome, "h1").await.unwrap();
    let context = f.store.recent_messages("c-1", 10).await.unwrap();
    assert_eq!(context.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["hello", "hi"]);

    // The next turn continues it, seeing the count before its own rows.
    let next = f.store.open_turn(opening("c-1", None, "h3", 1_070)).await.unwrap().unwrap();
    assert_eq!(next.conversation.message_count, 2);
    assert_eq!(f.store.get_conversation(&alice, "c-1").await.unwrap().unwrap().message_count, 4);
    assert!(f.store.open_turn(opening("c-404", None, "h4", 1_080)).await.unwrap().is_none(), "unknown");
}

async fn conversations_and_messages_get_whole_number_aliases_in_creation_order(f: Fixture) {
    let first = f.store.create_conversation(&alice(), "one").await.unwrap();
    let second = f.store.create_conversation(&alice(), "two").await.unwrap();
    assert!(first.number > 0 && second.number > first.number, "{} then {}", first.number, second.number);
    let found = f.store.find_conversation_by_number(second.number).await.unwrap().unwrap();
    assert_eq!(found.id, second.id);
    assert_eq!(found.number, second.number);
    assert!(f.store.find_conversation_by_number(second.number + 1000).await.unwrap().is_none());

    let a = f.store.append_message(user_message(&first.id, "a")).await.unwrap();
    let b = f.store.append_message(user_message(&second.id, "b")).await.unwrap();
    assert!(a.number > 0 && b.number > a.number, "{} then {}", a.number, b.number);
    let page = f.store.list_messages(&first.id, &PageRequest { size: 10, cursor: None }).await.unwrap();
    assert_eq!(page.items[0].number, a.number, "read back as written");
}

fn complete(content: &str) -> MessageOutcome {
    MessageOutcome {
        status: MessageStatus::Complete,
        content: content.into(),
        model: "m".into(),
        prompt_tokens: 3,
        completion_tokens: 1,
        error: String::new(),
    }
}

/// On PostgreSQL, how many transactions wrote these conversations' rows (rows written in one
/// transaction share its `xmin`); `None` on SQLite.
async fn transactions_that_wrote(db: &Db, ids: &[String]) -> Option<i64> {
    let Db::Postgres(pool) = db else { return None };
    let sql = "SELECT count(DISTINCT xmin::text) FROM conversations WHERE id = ANY($1)";
    Some(sqlx::query_scalar(sql).bind(ids).fetch_one(pool).await.unwrap())
}

async fn turns_opened_and_closed_together_each_get_their_own_rows_and_lease(f: Fixture) {
    let (alice, bob) = (alice(), Principal::parse("drillquiz", "bob").unwrap());
    let opening = |owner, id: &'static str, create, holder: &'static str, message: &'static str| TurnOpening {
        owner,
        conversation_id: id,
        create,
        holder,
        now: 1_000,
        until: 1_100,
        message,
        model: "m",
    };
    // Conversations that exist: one free, one another holder's lease holds, one Bob's.
    for (owner, id, holder) in [(&alice, "free", "h0"), (&alice, "held", "other"), (&bob, "bobs", "h0")] {
        let first = f.store.open_turn(opening(owner, id, Some("t"), holder, "first")).await.unwrap().unwrap();
        if holder == "h0" {
            f.store.close_turn(id, &first.assistant.id, complete("answer"), holder).await.unwrap();
        }
    }

    // Thirty new conversations and the three turns above, all at once.
    let ids: Vec<String> = (0..30).map(|i| format!("new-{i}")).collect();
    let messages: Vec<String> = (0..30).map(|i| format!("question {i}")).collect();
    let mut turns: Vec<TurnOpening<'_>> = ids
        .iter()
        .zip(&messages)
        .map(|(id, message)| TurnOpening {
            owner: &alice,
            conversation_id: id,
            create: Some("new"),
            holder: id,
            now: 1_000,
            until: 1_100,
            message,
            model: "m",
        })
        .collect();
    turns.push(opening(&alice, "free", None, "mine", "again"));
    turns.push(opening(&alice, "held", None, "mine", "too soon"));
    turns.push(opening(&alice, "bobs", None, "mine", "not mine"));
    let store = &f.store;
    let opened = futures::future::join_all(turns.iter().map(|t| store.open_turn(*t))).await;
    let opened: Vec<_> = opened.into_iter().map(Result::unwrap).collect();

    let (new, [free, held, bobs]) = opened.split_at(30) else { panic!("33 answers") };
    assert!(held.is_none(), "another holder's lease holds");
    assert!(bobs.is_none(), "never on someone else's conversation");
    let free = free.as_ref().expect("a free conversation is leased");
    assert_eq!(free.conversation.message_count, 2, "as it was before the turn");
    let mut numbers = std::collections::HashSet::new();
    for (i, turn) in new.iter().enumerate() {
        let turn = turn.as_ref().expect("a new conversation is born leased");
        assert_eq!(turn.conversation.id, ids[i]);
        assert_eq!(turn.conversation.message_count, 0);
        assert_eq!(turn.user_message.content, messages[i]);
        assert!(turn.user_message.number < turn.assistant.number, "the question is numbered before its answer");
        assert!(
            numbers.insert(turn.user_message.number) && numbers.insert(turn.assistant.number),
            "numbers are unique"
        );
        let page = f.store.list_messages(&ids[i], &PageRequest { size: 10, cursor: None }).await.unwrap();
        let stored: Vec<_> = page.items.iter().map(|m| (m.content.as_str(), m.status, m.number)).collect();
        assert_eq!(
            stored,
            [
                (messages[i].as_str(), MessageStatus::Complete, turn.user_message.number),
                ("", MessageStatus::InProgress, turn.assistant.number)
            ]
        );
    }
    assert_eq!(f.store.list_messages("held", &PageRequest { size: 10, cursor: None }).await.unwrap().items.len(), 2);
    assert_eq!(f.store.list_messages("bobs", &PageRequest { size: 10, cursor: None }).await.unwrap().items.len(), 2);
    if let Some(transactions) = transactions_that_wrote(&f.db, &ids).await {
        assert!(transactions < 30, "thirty turns at once share commits on PostgreSQL: {transactions} transactions");
    }

    // All closed at once, each with its own answer; one by a holder that no longer holds it.
    let mut closings: Vec<(String, String, String, &str)> = new
        .iter()
        .flatten()
        .map(|t| {
            let id = t.conversation.id.clone();
            let answer = format!("answer to {}", t.user_message.content);
            (id.clone(), t.assistant.id.clone(), answer, "")
        })
        .collect();
    closings[0].3 = "not the holder";
    let closed = futures::future::join_all(closings.iter().map(|(id, answer_id, answer, holder)| {
        let holder = if holder.is_empty() { id.as_str() } else { holder };
        store.close_turn(id, answer_id, complete(answer), holder)
    }))
    .await;
    assert!(closed.iter().all(Result::is_ok), "{closed:?}");
    for (i, (id, _, answer, _)) in closings.iter().enumerate() {
        let context = f.store.recent_messages(id, 10).await.unwrap();
        assert_eq!(context.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), [messages[i].as_str(), answer]);
        let next = f.store.lease_turn(id, &alice, "next", 1_050, 1_200).await.unwrap();
        assert_eq!(next, i != 0, "{id}: the lease is given back only by its holder");
    }
}

async fn a_turn_that_fails_does_not_fail_the_turns_committed_with_it(f: Fixture) {
    let alice = alice();
    f.store.create_conversation(&alice, "exists").await.unwrap();
    let taken = f
        .store
        .list_conversations(&alice, &ConversationFilter::default(), &PageRequest { size: 10, cursor: None })
        .await;
    let taken = taken.unwrap().items.remove(0).id;
    let mut ids: Vec<String> = (0..10).map(|i| format!("fine-{i}")).collect();
    // Creating a conversation whose id is taken fails: it alone.
    ids.insert(5, taken);
    let store = &f.store;
    let opened = futures::future::join_all(ids.iter().map(|id| {
        store.open_turn(TurnOpening {
            owner: &alice,
            conversation_id: id,
            create: Some("new"),
            holder: "h",
            now: 1_000,
            until: 1_100,
            message: "hello",
            model: "m",
        })
    }))
    .await;
    for (i, outcome) in opened.iter().enumerate() {
        if i == 5 {
            assert!(outcome.is_err(), "an id that is taken: {outcome:?}");
        } else {
            assert!(matches!(outcome, Ok(Some(_))), "{}: {outcome:?}", ids[i]);
            assert_eq!(
                f.store.list_messages(&ids[i], &PageRequest { size: 10, cursor: None }).await.unwrap().items.len(),
                2
            );
        }
    }
}

/// PostgreSQL only: turns open and close on two connections kept for them, outside the pool.
/// One that PostgreSQL has ended (a restart, a proxy's idle cut) is replaced: after an idle
/// second before it is used, else right after the one statement it failed.
#[tokio::test]
async fn turns_keep_their_own_connections_and_replace_one_postgresql_ended() {
    let f = open(db::postgres().await).await;
    let Db::Postgres(pool) = &f.db else { panic!("not PostgreSQL") };
    let alice = alice();
    let turn = |id| TurnOpening {
        owner: &alice,
        conversation_id: id,
        create: Some("t"),
        holder: id,
        now: 1_000,
        until: 1_100,
        message: "hello",
        model: "m",
    };
    let end_kept = || async {
        let sql = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                   WHERE datname = current_database() AND application_name = ANY($1)";
        let ended: Vec<bool> = sqlx::query_scalar(sql).bind(KEPT).fetch_all(pool).await.unwrap();
        assert_eq!(ended, [true, true], "one connection kept for each kind");
        assert_eq!(kept_connections_become(pool, &[]).await, Vec::<String>::new(), "the ended backends are gone");
    };
    let first = f.store.open_turn(turn("c-1")).await.unwrap().unwrap();
    f.store.close_turn("c-1", &first.assistant.id, complete("one"), "c-1").await.unwrap();

    // Ended while idle: past the idle time after which it is pinged before use, as the pool's.
    end_kept().await;
    tokio::time::sleep(switchboard_kit::db::PING_WHEN_IDLE_FOR).await;
    let second = f.store.open_turn(turn("c-2")).await.unwrap().expect("a turn after its connection ended");
    f.store.close_turn("c-2", &second.assistant.id, complete("two"), "c-2").await.unwrap();
    let context = f.store.recent_messages("c-2", 10).await.unwrap();
    assert_eq!(context.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["hello", "two"]);
    assert_eq!(kept_connections(pool).await, KEPT, "both replaced");

    // Ended and used at once, before any ping: one statement of each kind fails, and only that.
    end_kept().await;
    let _opening_ended_under_it = f.store.open_turn(turn("c-3")).await;
    let _closing_ended_under_it = f.store.close_turn("c-2", &second.assistant.id, complete("two"), "c-2").await;
    let fourth = f.store.open_turn(turn("c-4")).await.unwrap().expect("the next turn, on a new connection");
    f.store.close_turn("c-4", &fourth.assistant.id, complete("four"), "c-4").await.unwrap();
    assert_eq!(f.store.recent_messages("c-4", 10).await.unwrap().len(), 2);

    // Closing the store closes them too, telling the server, and no turn opens one again.
    assert_eq!(kept_connections(pool).await, KEPT);
    let store = SqlStore::new(f.db.clone());
    let fifth = store.open_turn(turn("c-5")).await.unwrap().expect("a turn on another store");
    store.close_turn("c-5", &fifth.assistant.id, complete("five"), "c-5").await.unwrap();
    store.close().await;
    let watcher = Db::connect(&f._test_db.url, "DATABASE_URL").await.unwrap();
    let Db::Postgres(watcher) = &watcher else { panic!("not PostgreSQL") };
    assert_eq!(
        kept_connections_become(watcher, &KEPT).await,
        KEPT,
        "the first store's two are left, the closed store's are gone"
    );
    assert!(store.open_turn(turn("c-6")).await.is_err(), "a closed store opens no turn");
}

/// What the turns' kept connections of this database are called, sorted.
const KEPT: [&str; 2] = [KEPT_FOR_CLOSINGS, KEPT_FOR_OPENINGS];

/// The turns' kept connections to this database (`pg_stat_activity`), by name, sorted.
async fn kept_connections(pool: &sqlx::PgPool) -> Vec<String> {
    let sql = "SELECT application_name FROM pg_stat_activity \
               WHERE datname = current_database() AND application_name = ANY($1) ORDER BY 1";
    sqlx::query_scalar(sql).bind(KEPT).fetch_all(pool).await.unwrap()
}

/// [`kept_connections`] once they are `expected`, or after 5 s, whatever they are then: backends
/// leave `pg_stat_activity` a moment after they end.
async fn kept_connections_become(pool: &sqlx::PgPool, expected: &[&str]) -> Vec<String> {
    let mut kept = kept_connections(pool).await;
    for _ in 0..250 {
        if kept == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        kept = kept_connections(pool).await;
    }
    kept
}
