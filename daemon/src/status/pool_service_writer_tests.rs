//! The fan-out writer's passes: what makes it plan again, and what does not.
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::PoolServiceWriter;
use crate::mock_api::scripted;
use crate::snapshot::Snapshot;
use crate::status::leader::Fence;
use crate::status::pool_ingress;

fn leading(epoch: u64, until: Instant) -> Fence {
    Fence {
        epoch,
        tenure: 1,
        until: Some(until),
        holder: Some("node-a".into()),
        api_reachable: true,
        contact: Some(Instant::now()),
    }
}

/// Waits until the writer has made `n` plans (or fails after a few seconds).
async fn plans_reach(writer: &PoolServiceWriter, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while writer.stats().plans < n {
        assert!(Instant::now() < deadline, "plans: {:?}", writer.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Lease renewals in one term change nothing the plan reads: the leader does not plan
/// again over every Service at each one (issue 17: work at rest that grows with the
/// cluster). A new snapshot and a new term do make a plan.
#[tokio::test]
async fn lease_renewals_in_one_term_make_no_new_plan() {
    // No Service: the plan asks for no request, so the API is never called.
    let (client, _api) = scripted(vec![]);
    let start = Instant::now() + Duration::from_secs(60);
    let (fence_tx, fence) = watch::channel(leading(1, start));
    let (_cloud_tx, cloud) = pool_ingress::channel();
    let writer = PoolServiceWriter::spawn(client, "node-a", fence, Duration::from_secs(5), cloud);
    writer.submit(Snapshot::default());
    plans_reach(&writer, 1).await;
    for i in 1..=20u64 {
        fence_tx.send_replace(leading(1, start + Duration::from_secs(i)));
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Let the task see the last renewal before looking.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        writer.stats().plans,
        1,
        "renewals made plans: {:?}",
        writer.stats()
    );
    writer.submit(Snapshot::default());
    plans_reach(&writer, 2).await;
    fence_tx.send_replace(leading(2, start));
    plans_reach(&writer, 3).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(writer.stats().plans, 3, "{:?}", writer.stats());
}
