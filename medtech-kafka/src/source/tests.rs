use super::*;

fn tp(p: i32) -> TopicPartition {
    ("t".to_owned(), p)
}

fn offsets(tpl: &TopicPartitionList) -> Vec<(i32, Offset)> {
    let mut v: Vec<_> = tpl
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    v.sort_by_key(|(p, _)| *p);
    v
}

#[test]
fn ack_stores_per_partition_the_offset_after_the_highest_acknowledged_message() {
    let mut st = State::default();
    st.assign(&[tp(0), tp(1)]);
    // positions 0..6 alternate partitions 0 and 1 at offsets 10, 20, 11, 21, 12, 22
    for (pos, (p, off)) in [(0, 10), (1, 20), (0, 11), (1, 21), (0, 12), (1, 22)]
        .into_iter()
        .enumerate()
    {
        st.deliver(pos as u64, tp(p), off).unwrap();
    }
    assert!(st.outstanding());
    assert_eq!(st.ack(2), HashMap::from([(tp(0), 12), (tp(1), 21)]));
    assert_eq!(st.ack(3), HashMap::from([(tp(1), 22)]));
    assert_eq!(
        st.ack(3),
        HashMap::new(),
        "acknowledging again changes nothing"
    );
    assert!(st.outstanding());
    assert_eq!(st.ack(5), HashMap::from([(tp(0), 13), (tp(1), 23)]));
    assert!(!st.outstanding());
    assert_eq!(
        offsets(&st.commit_list(None).unwrap()),
        vec![(0, Offset::Offset(13)), (1, Offset::Offset(23))]
    );
}

#[test]
fn revoke_commits_acknowledged_offsets_and_forgets_unacknowledged_messages() {
    let mut st = State::default();
    st.assign(&[tp(0), tp(1)]);
    st.deliver(0, tp(1), 5).unwrap();
    st.deliver(1, tp(0), 7).unwrap();
    st.deliver(2, tp(1), 6).unwrap();
    st.ack(0);
    let (commit, dropped) = st.revoke(&[tp(1)]);
    assert_eq!(offsets(&commit.unwrap()), vec![(1, Offset::Offset(6))]);
    assert_eq!(dropped, 1, "offset 6 of partition 1 was not acknowledged");
    assert_eq!(st.dropped_at_revoke, 1);
    // A record of the revoked partition that was already fetched is not delivered.
    assert!(st.deliver(3, tp(1), 7).is_none());
    // The partition comes back (new generation): the old message's acknowledgement does not
    // count, the re-read one's does.
    st.assign(&[tp(1)]);
    st.deliver(4, tp(1), 6).unwrap();
    assert_eq!(st.ack(2), HashMap::from([(tp(0), 8)]));
    assert_eq!(st.ack(4), HashMap::from([(tp(1), 7)]));
}

fn refused() -> rdkafka::error::KafkaResult<()> {
    Err(rdkafka::error::KafkaError::ConsumerCommit(
        rdkafka::types::RDKafkaErrorCode::RebalanceInProgress,
    ))
}

fn failed_partitions(commits: CloseCommits) -> Option<Vec<TopicPartition>> {
    match commits.outcome() {
        Ok(()) => None,
        Err(Error::CommitAtClose { partitions, source }) => {
            assert!(source
                .code()
                .is_some_and(|c| c.starts_with("RebalanceInProgress")));
            Some(partitions)
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

/// `(partition, offset)` pairs of topic `t`.
fn at(offsets: &[(i32, i64)]) -> Vec<(TopicPartition, i64)> {
    offsets.iter().map(|(p, o)| (tp(*p), *o)).collect()
}

#[test]
fn close_reports_a_failed_revoke_commit_even_when_the_rest_committed() {
    // The commit of [0, 1] is refused; the rebalance served meanwhile revokes 1, whose
    // commit fails; the retried commit of 0 succeeds. Partition 1's offsets were never
    // committed: close must not report success.
    let mut c = CloseCommits::default();
    c.record(&at(&[(0, 5), (1, 7)]), &refused());
    c.record(&at(&[(1, 7)]), &refused());
    c.record(&at(&[(0, 5)]), &Ok(()));
    assert_eq!(failed_partitions(c), Some(vec![tp(1)]));
}

#[test]
fn close_reports_an_earlier_failed_revoke_when_a_later_revoke_succeeded() {
    let mut c = CloseCommits::default();
    c.record(&at(&[(0, 5), (1, 7)]), &refused());
    c.record(&at(&[(0, 5)]), &refused()); // first revoke fails
    c.record(&at(&[(1, 7)]), &Ok(())); // second revoke succeeds
    assert_eq!(failed_partitions(c), Some(vec![tp(0)]));
}

#[test]
fn close_reports_every_partition_whose_latest_commit_failed() {
    let mut c = CloseCommits::default();
    c.record(&at(&[(2, 1), (0, 1), (1, 1)]), &refused());
    c.record(&at(&[(1, 1)]), &Ok(()));
    let e = CloseCommits {
        committed: c.committed.clone(),
        failed: c.failed.clone(),
    }
    .outcome()
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Kafka offset commit at close failed for 2 partition(s)"
    );
    assert_eq!(failed_partitions(c), Some(vec![tp(0), tp(2)]));
}

#[test]
fn a_later_successful_commit_of_the_same_partitions_heals_a_refusal() {
    // Refused during the rebalance, then committed by the revoke when the consumer closes.
    let mut c = CloseCommits::default();
    c.record(&at(&[(0, 3), (1, 4)]), &refused());
    c.record(&at(&[(0, 3), (1, 4)]), &Ok(()));
    assert_eq!(failed_partitions(c), None);
    assert_eq!(
        failed_partitions(CloseCommits::default()),
        None,
        "nothing to commit"
    );
}

/// Found by the fault-injection test (issue 19): the commit at close succeeded, then the
/// revoke of the consumer's close committed the same offsets again and the broker refused
/// (`UnknownMemberId`, the group rebalancing as other members left). The offsets are
/// committed: close succeeds.
#[test]
fn a_refused_recommit_of_offsets_already_committed_is_no_failure() {
    let mut c = CloseCommits::default();
    c.record(&at(&[(2, 9)]), &Ok(()));
    c.record(&at(&[(2, 9)]), &refused());
    assert_eq!(failed_partitions(c), None);
}

#[test]
fn a_refused_commit_of_a_higher_offset_is_a_failure_after_a_lower_one_committed() {
    let mut c = CloseCommits::default();
    c.record(&at(&[(0, 4), (1, 4)]), &Ok(()));
    c.record(&at(&[(0, 6), (1, 4)]), &refused());
    assert_eq!(failed_partitions(c), Some(vec![tp(0)]));
}
