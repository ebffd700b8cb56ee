//! Usage reports over the hourly rollups and budget storage on SQLite and PostgreSQL, with
//! totals computed by hand; and the budget ledger, in process and on a real Redis shared by
//! two "replicas", across a period boundary moved by an injected clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use switchboard_kit::db::Db;
use switchboard_kit::time::parse_date_ms;
use switchboard_llm_proxy::MIGRATIONS;
use switchboard_llm_proxy::budgets::ledger::{Ledger, RESERVATION_LEASE, ReserveError};
use switchboard_llm_proxy::budgets::{Budget, Clock, Period, Scope, Spent};
use switchboard_llm_proxy::store::{
    BudgetStore, Dimension, ReportRow, Rollup, RollupKey, SqlStore, UsageFilter, UsageStore,
};
use switchboard_test_support::db::{self, TestDb};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn h0() -> i64 {
    parse_date_ms("2026-11-01").unwrap()
}

async fn store(test_db: &TestDb) -> SqlStore {
    let db = Db::connect(&test_db.url, "DATABASE_URL").await.unwrap();
    db.migrate(&MIGRATIONS).await.unwrap();
    SqlStore::new(db)
}

fn r(requests: i64, prompt: i64, completion: i64, cost: i64, unpriced: i64) -> Rollup {
    Rollup {
        requests,
        prompt_tokens: prompt,
        completion_tokens: completion,
        cost_micros: cost,
        unpriced_requests: unpriced,
    }
}

fn key(system: &str, user: &str, key: &str, model: &str, hour: i64) -> RollupKey {
    RollupKey { system_id: system.into(), user_id: user.into(), key_id: key.into(), model: model.into(), hour }
}

/// Five rollup rows, one of them written in two batches, one before the report's range.
async fn seed(store: &SqlStore) {
    let h0 = h0();
    store
        .add_rollups(&[
            (key("drillquiz", "u1", "k1", "m1", h0 + HOUR), r(1, 60, 30, 200, 0)),
            (key("drillquiz", "u1", "k1", "m2", h0 + 2 * HOUR), r(1, 10, 5, 0, 1)),
            (key("drillquiz", "u2", "", "m1", h0 + DAY + 3 * HOUR), r(3, 30, 30, 90, 0)),
            (key("cointutor", "u1", "k9", "m1", h0 + 5 * HOUR), r(4, 40, 40, 1000, 0)),
            (key("drillquiz", "u1", "k1", "m1", h0 - HOUR), r(7, 7, 7, 7, 0)),
        ])
        .await
        .unwrap();
    // A second batch for the same row adds to it.
    store.add_rollups(&[(key("drillquiz", "u1", "k1", "m1", h0 + HOUR), r(1, 40, 20, 100, 0))]).await.unwrap();
}

fn row(system: &str, user: &str, key: &str, model: &str, period: i64, totals: Rollup) -> ReportRow {
    ReportRow {
        system_id: system.into(),
        user_id: user.into(),
        key_id: key.into(),
        model: model.into(),
        period_start: period,
        totals,
    }
}

async fn reports_group_and_total_by_hand(test_db: TestDb) {
    let store = store(&test_db).await;
    seed(&store).await;
    let (from, to) = (h0(), h0() + 30 * DAY);
    let all = UsageFilter::default();
    let drillquiz = UsageFilter { system_ids: Some(vec!["drillquiz".into()]), ..UsageFilter::default() };

    // Totals only: the row before the range is left out.
    let totals = store.report(from, to, &all, &[]).await.unwrap();
    assert_eq!(totals, vec![row("", "", "", "", -1, r(10, 180, 125, 1390, 1))]);

    let by_tenant = store.report(from, to, &all, &[Dimension::Tenant]).await.unwrap();
    assert_eq!(
        by_tenant,
        vec![
            row("cointutor", "", "", "", -1, r(4, 40, 40, 1000, 0)),
            row("drillquiz", "", "", "", -1, r(6, 140, 85, 390, 1))
        ]
    );

    let by_day = store.report(from, to, &drillquiz, &[Dimension::Tenant, Dimension::Day]).await.unwrap();
    assert_eq!(
        by_day,
        vec![
            row("drillquiz", "", "", "", h0(), r(3, 110, 55, 300, 1)),
            row("drillquiz", "", "", "", h0() + DAY, r(3, 30, 30, 90, 0)),
        ]
    );

    let by_user_model = store.report(from, to, &drillquiz, &[Dimension::User, Dimension::Model]).await.unwrap();
    assert_eq!(
        by_user_model,
        vec![
            row("drillquiz", "u1", "", "m1", -1, r(2, 100, 50, 300, 0)),
            row("drillquiz", "u1", "", "m2", -1, r(1, 10, 5, 0, 1)),
            row("drillquiz", "u2", "", "m1", -1, r(3, 30, 30, 90, 0)),
        ]
    );

    let one_key = UsageFilter { key_id: Some("k1".into()), ..UsageFilter::default() };
    assert_eq!(
        store.report(from, to, &one_key, &[Dimension::Key]).await.unwrap(),
        vec![row("", "", "k1", "", -1, r(3, 110, 55, 300, 1))]
    );

    let unpriced_model = UsageFilter { model: Some("m2".into()), ..UsageFilter::default() };
    assert_eq!(
        store.report(from, to, &unpriced_model, &[Dimension::Hour]).await.unwrap(),
        vec![row("", "", "", "", h0() + 2 * HOUR, r(1, 10, 5, 0, 1))]
    );

    // `to` is exclusive; a user of two tenants is reported per tenant; a tenant list of
    // none sees nothing.
    assert_eq!(store.report(from, h0() + 2 * HOUR, &all, &[]).await.unwrap()[0].totals, r(2, 100, 50, 300, 0));
    let u1 = UsageFilter { user_id: Some("u1".into()), ..UsageFilter::default() };
    assert_eq!(store.report(from, to, &u1, &[Dimension::User]).await.unwrap().len(), 2);
    let nobody = UsageFilter { system_ids: Some(vec![]), ..UsageFilter::default() };
    assert_eq!(store.report(from, to, &nobody, &[]).await.unwrap()[0].totals, Rollup::default());

    // What budgets count: a tenant's, a user's and a key's spend since a window's start.
    let budget = |scope, system: &str, subject: &str| {
        Budget::new(scope, system, subject, Period::Month, Some(1), None, None).unwrap()
    };
    let spent = |cost_micros, tokens| Spent { cost_micros, tokens };
    assert_eq!(store.spent(&budget(Scope::Tenant, "drillquiz", ""), from).await.unwrap(), spent(390, 225));
    assert_eq!(store.spent(&budget(Scope::User, "drillquiz", "u1"), from).await.unwrap(), spent(300, 165));
    assert_eq!(store.spent(&budget(Scope::Key, "cointutor", "k9"), from).await.unwrap(), spent(1000, 80));
    assert_eq!(store.spent(&budget(Scope::Key, "drillquiz", "k9"), from).await.unwrap(), spent(0, 0));
}

#[tokio::test]
async fn reports_on_sqlite() {
    reports_group_and_total_by_hand(db::sqlite()).await;
}

#[tokio::test]
async fn reports_on_postgres() {
    reports_group_and_total_by_hand(db::postgres().await).await;
}

async fn budgets_are_stored_replaced_and_deleted(test_db: TestDb) {
    let store = store(&test_db).await;
    let user = Budget::new(Scope::User, "drillquiz", "u1", Period::Day, Some(5_000_000), None, Some(90)).unwrap();
    let tenant = Budget::new(Scope::Tenant, "drillquiz", "", Period::Month, None, Some(1_000_000), None).unwrap();
    store.put_budget(&user).await.unwrap();
    store.put_budget(&tenant).await.unwrap();
    let raised = Budget { max_cost_micros: Some(7_000_000), ..user.clone() };
    store.put_budget(&raised).await.unwrap();
    assert_eq!(store.budgets().await.unwrap(), vec![tenant.clone(), raised]);
    assert!(store.delete_budget(&user.id()).await.unwrap());
    assert!(!store.delete_budget(&user.id()).await.unwrap());
    assert_eq!(store.budgets().await.unwrap(), vec![tenant]);
}

#[tokio::test]
async fn budget_store_on_sqlite() {
    budgets_are_stored_replaced_and_deleted(db::sqlite()).await;
}

#[tokio::test]
async fn budget_store_on_postgres() {
    budgets_are_stored_replaced_and_deleted(db::postgres().await).await;
}

/// A clock the test moves.
fn clock(start: i64) -> (Arc<AtomicI64>, Clock) {
    let now = Arc::new(AtomicI64::new(start));
    let read = now.clone();
    (now, Arc::new(move || read.load(Ordering::SeqCst)))
}

fn redis(prefix: &str) -> switchboard_kit::redis::Redis {
    let url = std::env::var("SWITCHBOARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let settings = switchboard_kit::redis::RedisSettings { url: url.into(), prefix: prefix.to_owned() };
    switchboard_kit::redis::Redis::new(&settings).unwrap()
}

fn refused(result: Result<Option<switchboard_llm_proxy::budgets::ledger::Reservation>, ReserveError>) -> String {
    match result {
        Err(ReserveError::Refused(refusal)) => tonic::Status::from(ReserveError::Refused(refusal)).message().to_owned(),
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(_) => panic!("expected a refusal, got a reservation"),
    }
}

/// A day budget of 1000 micro-dollars on drillquiz: seeded from the rollups, reserved,
/// refused, settled, and fresh again the next day.
async fn a_day_budget_holds_and_resets_at_midnight(redis: Option<switchboard_kit::redis::Redis>) {
    let test_db = db::sqlite();
    let store = Arc::new(store(&test_db).await);
    seed(&store).await;
    // Day two of November: the rollups hold 90 micro-dollars of drillquiz spend that day.
    let (now, clock) = clock(h0() + DAY + 12 * HOUR);
    let ledger = Ledger::new(redis, store.clone(), clock);
    let budget = Budget::new(Scope::Tenant, "drillquiz", "", Period::Day, Some(1000), None, Some(80)).unwrap();
    let ask = |cost| Spent { cost_micros: cost, tokens: 10 };

    let first = ledger.reserve(vec![budget.clone()], ask(900)).await.unwrap().expect("a budget applies");
    assert_eq!(first.warnings, vec![budget.id()], "990 of 1000 is past the 80 % warning");
    let message = refused(ledger.reserve(vec![budget.clone()], ask(20)).await);
    assert!(message.contains("tenant:drillquiz:day") && message.contains("2026-11-03T00:00:00Z"), "{message}");
    // The call used less than it reserved: the rest is free again.
    first.settle(ask(500)).await;
    let second = ledger.reserve(vec![budget.clone()], ask(400)).await.unwrap().unwrap();
    assert!(matches!(ledger.reserve(vec![budget.clone()], ask(20)).await, Err(ReserveError::Refused(_))));
    // A failed call (dropped unsettled) is released without charge.
    drop(second);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let third = ledger.reserve(vec![budget.clone()], ask(400)).await.unwrap().unwrap();
    third.settle(ask(410)).await;
    // 90 + 500 + 410 = 1000: exhausted.
    let message = refused(ledger.reserve(vec![budget.clone()], ask(1)).await);
    assert!(message.contains("is exhausted"), "{message}");

    // Midnight: a new window, seeded from the rollups of that day (none).
    now.store(h0() + 2 * DAY + 60_000, Ordering::SeqCst);
    let fresh = ledger.reserve(vec![budget.clone()], ask(999)).await.unwrap().unwrap();
    assert!(fresh.warnings.contains(&budget.id()));
    fresh.settle(ask(999)).await;
}

#[tokio::test]
async fn a_day_budget_in_process() {
    a_day_budget_holds_and_resets_at_midnight(None).await;
}

#[tokio::test]
async fn a_day_budget_on_redis() {
    let prefix = format!("sb-test-{}", uuid::Uuid::now_v7().simple());
    a_day_budget_holds_and_resets_at_midnight(Some(redis(&prefix))).await;
}

#[tokio::test]
async fn replicas_share_a_budget_through_redis_and_a_dead_replicas_reservation_expires() {
    let test_db = db::sqlite();
    let store = Arc::new(store(&test_db).await);
    let prefix = format!("sb-test-{}", uuid::Uuid::now_v7().simple());
    let (now, clock) = clock(h0() + 10 * DAY);
    let a = Ledger::new(Some(redis(&prefix)), store.clone(), clock.clone());
    let b = Ledger::new(Some(redis(&prefix)), store.clone(), clock);
    let budget = Budget::new(Scope::User, "drillquiz", "u1", Period::Month, None, Some(100), None).unwrap();
    let ask = Spent { cost_micros: 0, tokens: 60 };
    let held = a.reserve(vec![budget.clone()], ask).await.unwrap().unwrap();
    // Replica b sees replica a's reservation.
    assert!(matches!(b.reserve(vec![budget.clone()], ask).await, Err(ReserveError::Refused(_))));
    // Replica a dies holding it: nothing releases it but its lease.
    std::mem::forget(held);
    now.fetch_add(RESERVATION_LEASE.as_millis() as i64 + 1, Ordering::SeqCst);
    let taken = b.reserve(vec![budget.clone()], ask).await.unwrap().unwrap();
    taken.settle(ask).await;
    let message = refused(a.reserve(vec![budget], ask).await);
    assert!(message.contains("60 tokens of 100 tokens"), "{message}");
}
