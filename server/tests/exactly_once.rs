//! Exactly-once semantics end to end, against real `sluice` processes and
//! real clients: a consume-transform-produce process (confluent-kafka,
//! `server/tests/python/eos_transform.py`) killed with SIGKILL at random
//! points and restarted until its input is transformed, which must leave
//! every input record in the output exactly once and in order per key;
//! concurrent transactional "money transfers" (rdkafka) whose committed
//! records always sum to zero and whose aborted ones no read_committed
//! reader sees; and a transaction coordinator killed in the middle of
//! commits, after which no transaction is seen half.
//!
//! The random choices come from a seed printed at the start of each test;
//! `SLUICE_EOS_SEED=<seed>` replays one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use support::cluster::{Cluster, wait_until};
use support::{Broker, Rng, kafka, require_python};

/// Time limit of a transactional call (init, commit, abort).
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

fn seed(test: &str) -> Rng {
    let seed = Rng::seed_from_env("SLUICE_EOS_SEED");
    println!("{test}: seed {seed} (replay with SLUICE_EOS_SEED={seed})");
    Rng::new(seed)
}

fn transactional_producer(bootstrap: &str, id: &str) -> BaseProducer {
    let producer: BaseProducer = kafka::config(bootstrap)
        .set("transactional.id", id)
        .set("linger.ms", "0")
        .create()
        .expect("creating a transactional producer");
    producer
        .init_transactions(TXN_TIMEOUT)
        .unwrap_or_else(|error| panic!("init_transactions({id}): {error}"));
    producer
}

/// Queue one record; `Err` when the producer is in an error state.
fn send(
    producer: &BaseProducer,
    topic: &str,
    partition: i32,
    key: &str,
    value: &str,
) -> Result<(), KafkaError> {
    loop {
        let record = BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(value);
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// A record read back: its partition, key and value.
#[derive(Clone, Debug)]
struct Read {
    partition: i32,
    key: String,
    value: String,
}

fn reader(bootstrap: &str, topic: &str, partitions: i32, committed: bool) -> BaseConsumer {
    kafka::reader_from_start(bootstrap, topic, partitions, committed)
}

fn read_of(message: &impl Message) -> Read {
    Read {
        partition: message.partition(),
        key: String::from_utf8_lossy(message.key().unwrap_or_default()).to_string(),
        value: String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string(),
    }
}

/// Every record of `topic` from the start up to the end the isolation
/// level allows (the last stable offset for read_committed, the high
/// watermark otherwise), in order per partition.
fn read_all(bootstrap: &str, topic: &str, partitions: i32, committed: bool) -> Vec<Read> {
    let consumer = reader(bootstrap, topic, partitions, committed);
    let mut at_end = BTreeSet::new();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions as usize {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => records.push(read_of(&message)),
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            // librdkafka reports a lost connection (to a killed broker it
            // still knows of) as an informational error and reconnects.
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure))) => {
                println!("reading {topic}: a broker connection failed");
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
        }
    }
    records
}

/// The transform process's stdout lines arrive on the channel; `None`
/// once it closed its stdout.
fn spawn_transform(
    python: &std::path::Path,
    arguments: &[&str],
) -> (Child, mpsc::Receiver<String>) {
    let script = support::repo_root().join("server/tests/python/eos_transform.py");
    let mut child = Command::new(python)
        .arg(script)
        .args(arguments)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning eos_transform.py");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_sender.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

#[test]
fn a_transform_killed_at_random_points_outputs_every_input_record_exactly_once_in_key_order() {
    const RECORDS: usize = 2000;
    const KEYS: usize = 50;
    const PARTITIONS: i32 = 3;
    const KILLS: usize = 10;
    let Some(python) = require_python() else {
        return;
    };
    let mut rng = seed("eos-transform");
    let mut broker = Broker::start("eos-transform");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "eos-in", PARTITIONS, &[]);
    kafka::create_topic(&bootstrap, "eos-out", PARTITIONS, &[]);

    // Keyed input: "k<i>:<seq>", the key's records in seq order in the
    // partition the key hashes to.
    let producer: BaseProducer = kafka::config(&bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .expect("creating the input's producer");
    let mut inputs = Vec::with_capacity(RECORDS);
    for index in 0..RECORDS {
        let key = format!("k{}", index % KEYS);
        let value = format!("{key}:{}", index / KEYS);
        loop {
            match producer.send(BaseRecord::to("eos-in").key(&key).payload(&value)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => panic!("producing the input: {error}"),
            }
        }
        inputs.push(value);
    }
    producer.flush(TXN_TIMEOUT).expect("flushing the input");
    let input = read_all(&bootstrap, "eos-in", PARTITIONS, false);
    assert_eq!(input.len(), RECORDS, "the input is all there");

    let arguments = [
        bootstrap.as_str(),
        "eos-in",
        "eos-out",
        "eos-transform-group",
        "eos-transform",
    ];
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut kills = 0;
    let mut lives = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "the input was not transformed in time"
        );
        let (mut child, lines) = spawn_transform(&python, &arguments);
        lives += 1;
        // Kill at a random point after this life's first commit, so that
        // every life makes progress; the last life runs to the end. A life
        // that commits quickly is killed within a few commits whatever its
        // delay, so the input outlasts KILLS lives on a fast machine too.
        let kill_delay = (kills < KILLS).then(|| Duration::from_millis(rng.below(900)));
        let commit_cap = 1 + rng.below(4) as usize;
        let late_kill = Duration::from_millis(rng.below(30));
        let mut kill_at = None;
        let mut done = false;
        let mut life_commits = 0;
        loop {
            if let Some(at) = kill_at
                && Instant::now() >= at
            {
                break;
            }
            match lines.recv_timeout(Duration::from_millis(10)) {
                Ok(line) => {
                    if line.starts_with("done") {
                        done = true;
                    }
                    if line.starts_with("committed") {
                        life_commits += 1;
                    }
                    if line.starts_with("committed")
                        && let Some(delay) = kill_delay
                    {
                        let now = Instant::now();
                        if kill_at.is_none() {
                            kill_at = Some(now + delay);
                        }
                        if life_commits == commit_cap {
                            kill_at = kill_at.min(Some(now + late_kill));
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    assert!(
                        Instant::now() < deadline,
                        "the input was not transformed in time"
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        if kill_at.is_some() && !done {
            let _ = child.kill();
            let status = child.wait().expect("waiting for the transform");
            kills += 1;
            println!("life {lives}: killed ({status}) after {life_commits} commits");
            continue;
        }
        let status = child.wait().expect("waiting for the transform");
        assert!(
            status.success(),
            "life {lives}: the transform failed: {status}"
        );
        if done {
            println!("life {lives}: done after {kills} kills");
            break;
        }
    }
    broker.assert_running();
    assert!(
        kills >= KILLS / 2,
        "only {kills} kills before the input was transformed: the test exercised too little"
    );

    let output = read_all(&bootstrap, "eos-out", PARTITIONS, true);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for record in &output {
        let original = record
            .value
            .strip_suffix(":transformed")
            .unwrap_or_else(|| panic!("an output record not transformed: {record:?}"));
        *counts.entry(original.to_string()).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(
        duplicated.is_empty(),
        "input records in the output more than once: {duplicated:?}"
    );
    let missing: Vec<_> = inputs
        .iter()
        .filter(|value| !counts.contains_key(*value))
        .collect();
    assert!(
        missing.is_empty(),
        "{} input records missing from the output, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(output.len(), RECORDS);
    // Per key: one output partition, the key's seqs in order.
    let mut per_key: BTreeMap<String, (BTreeSet<i32>, Vec<usize>)> = BTreeMap::new();
    for record in &output {
        let seq = record
            .value
            .split(':')
            .nth(1)
            .and_then(|seq| seq.parse().ok())
            .expect("a seq");
        let entry = per_key.entry(record.key.clone()).or_default();
        entry.0.insert(record.partition);
        entry.1.push(seq);
    }
    for (key, (partitions, seqs)) in per_key {
        assert_eq!(partitions.len(), 1, "{key} in partitions {partitions:?}");
        let expected: Vec<usize> = (0..RECORDS / KEYS).collect();
        assert_eq!(seqs, expected, "{key}'s records out of order");
    }
}

/// One transfer's two records: a debit ("-amount") to one partition and a
/// credit ("+amount") to another, in one transaction; an aborted one's
/// values carry "abort".
const TRANSFER_PARTITIONS: i32 = 4;

/// (transfer id, signed amount, aborted) of a record value
/// "<id>:<signed amount>[:abort]".
fn parse_transfer(value: &str) -> (String, i64, bool) {
    let mut fields = value.split(':');
    let id = fields.next().expect("an id").to_string();
    let amount = fields
        .next()
        .and_then(|amount| amount.parse().ok())
        .unwrap_or_else(|| panic!("an amount in {value:?}"));
    (id, amount, fields.next() == Some("abort"))
}

#[test]
fn concurrent_transfers_always_sum_to_zero_and_aborted_ones_are_never_read_committed() {
    const PRODUCERS: usize = 3;
    const TRANSFERS_PER_PRODUCER: usize = 40;
    let mut rng = seed("eos-transfers");
    let broker = Broker::start("eos-transfers");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "transfers", TRANSFER_PARTITIONS, &[]);

    // A read_committed reader that runs while the transfers are made.
    let producing = Arc::new(AtomicBool::new(true));
    let live_reader = {
        let bootstrap = bootstrap.clone();
        let producing = producing.clone();
        std::thread::spawn(move || {
            let consumer = reader(&bootstrap, "transfers", TRANSFER_PARTITIONS, true);
            let mut records = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while producing.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "the live reader timed out");
                match consumer.poll(Duration::from_millis(100)) {
                    None | Some(Err(KafkaError::PartitionEOF(_))) => {}
                    Some(Ok(message)) => {
                        let record = read_of(&message);
                        assert!(
                            !parse_transfer(&record.value).2,
                            "read_committed saw an aborted record: {record:?}"
                        );
                        records.push(record);
                    }
                    Some(Err(error)) => panic!("live reader: {error}"),
                }
            }
            finish_live_reader(consumer, records)
        })
    };

    let outcomes = Arc::new(Mutex::new(BTreeMap::new()));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|index| {
            let bootstrap = bootstrap.clone();
            let outcomes = outcomes.clone();
            let mut rng = Rng::new(rng.next_u64());
            std::thread::spawn(move || {
                let id = format!("transfers-{index}");
                let producer = transactional_producer(&bootstrap, &id);
                for transfer in 0..TRANSFERS_PER_PRODUCER {
                    let debit = rng.below(TRANSFER_PARTITIONS as u64) as i32;
                    let credit = (debit + 1 + rng.below(TRANSFER_PARTITIONS as u64 - 1) as i32)
                        % TRANSFER_PARTITIONS;
                    let amount = 1 + rng.below(1000) as i64;
                    let abort = rng.below(5) == 0;
                    let suffix = if abort { ":abort" } else { "" };
                    let transfer_id = format!("{id}-{transfer}");
                    producer.begin_transaction().expect("begin");
                    send(
                        &producer,
                        "transfers",
                        debit,
                        &transfer_id,
                        &format!("{transfer_id}:-{amount}{suffix}"),
                    )
                    .expect("send the debit");
                    send(
                        &producer,
                        "transfers",
                        credit,
                        &transfer_id,
                        &format!("{transfer_id}:{amount}{suffix}"),
                    )
                    .expect("send the credit");
                    if abort {
                        // Written to the log first, so that the abort has
                        // records to hide.
                        producer.flush(TXN_TIMEOUT).expect("flush");
                        producer.abort_transaction(TXN_TIMEOUT).expect("abort");
                    } else {
                        producer.commit_transaction(TXN_TIMEOUT).expect("commit");
                    }
                    outcomes.lock().unwrap().insert(transfer_id, !abort);
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().expect("a producer thread panicked");
    }
    producing.store(false, Ordering::SeqCst);
    let live = live_reader.join().expect("the live reader panicked");

    let outcomes = outcomes.lock().unwrap().clone();
    let committed: BTreeSet<&String> = outcomes
        .iter()
        .filter(|(_, committed)| **committed)
        .map(|(id, _)| id)
        .collect();
    let aborted_count = outcomes.len() - committed.len();
    println!(
        "{} transfers committed, {aborted_count} aborted",
        committed.len()
    );
    for (view, records) in [
        ("the live reader", live),
        (
            "a reader after the transfers",
            read_all(&bootstrap, "transfers", TRANSFER_PARTITIONS, true),
        ),
    ] {
        let mut sum = 0;
        let mut per_transfer: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for record in &records {
            let (id, amount, aborted) = parse_transfer(&record.value);
            assert!(!aborted, "{view} saw an aborted record: {record:?}");
            sum += amount;
            per_transfer.entry(id).or_default().push(record.partition);
        }
        assert_eq!(sum, 0, "{view}: the amounts do not sum to zero");
        assert_eq!(
            records.len(),
            2 * committed.len(),
            "{view}: two records per committed transfer"
        );
        assert_eq!(
            per_transfer.keys().collect::<BTreeSet<_>>(),
            committed,
            "{view}: the committed transfers"
        );
        for (id, partitions) in per_transfer {
            assert_eq!(partitions.len(), 2, "{view}: transfer {id}: {partitions:?}");
        }
    }
    let uncommitted = read_all(&bootstrap, "transfers", TRANSFER_PARTITIONS, false);
    let aborted_seen = uncommitted
        .iter()
        .filter(|record| parse_transfer(&record.value).2)
        .count();
    assert_eq!(
        aborted_seen,
        2 * aborted_count,
        "read_uncommitted sees the aborted transfers' records"
    );
    assert_eq!(uncommitted.len(), 2 * outcomes.len());
}

/// Read on until every partition reports EOF after the producers ended
/// (an EOF from before may precede a later transfer's records).
fn finish_live_reader(consumer: BaseConsumer, mut records: Vec<Read>) -> Vec<Read> {
    let mut at_end = BTreeSet::new();
    // Reposition at the current positions so that each partition reports
    // EOF once more.
    let mut positions = TopicPartitionList::new();
    for element in consumer.position().expect("positions").elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => Offset::Offset(offset),
            _ => Offset::Beginning,
        };
        positions
            .add_partition_offset(element.topic(), element.partition(), offset)
            .expect("position");
    }
    consumer.assign(&positions).expect("reassign");
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < TRANSFER_PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "the live reader's last round timed out"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                let record = read_of(&message);
                assert!(
                    !parse_transfer(&record.value).2,
                    "read_committed saw an aborted record: {record:?}"
                );
                at_end.remove(&record.partition);
                records.push(record);
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => panic!("live reader: {error}"),
        }
    }
    records
}

/// Commit `transactions` transactions of `id`, each one record "txn-<n>"
/// to each of eos-pairs' two partitions, counting the commits in `commits`;
/// a producer that fails fatally is replaced. Returns the values of the
/// transactions whose commit succeeded.
fn commit_pairs(
    bootstrap: &str,
    id: &str,
    transactions: usize,
    commits: &AtomicUsize,
) -> BTreeSet<String> {
    let mut producer = Some(transactional_producer(bootstrap, id));
    let mut committed = BTreeSet::new();
    let mut recreated = 0;
    let deadline = Instant::now() + Duration::from_secs(150);
    for transaction in 0..transactions {
        assert!(Instant::now() < deadline, "the transactions took too long");
        let current = producer.get_or_insert_with(|| {
            recreated += 1;
            transactional_producer(bootstrap, id)
        });
        let value = format!("txn-{transaction}");
        let attempt = (|| -> Result<(), KafkaError> {
            current.begin_transaction()?;
            send(current, "eos-pairs", 0, &value, &value)?;
            send(current, "eos-pairs", 1, &value, &value)?;
            let mut result = current.commit_transaction(TXN_TIMEOUT);
            // A retriable failure (a timeout, the coordinator moving) is
            // retried: the commit's outcome is not known yet.
            for _ in 0..3 {
                match &result {
                    Err(KafkaError::Transaction(error)) if error.is_retriable() => {
                        println!("transaction {transaction}: retrying the commit: {error}");
                        result = current.commit_transaction(TXN_TIMEOUT);
                    }
                    _ => break,
                }
            }
            result
        })();
        match attempt {
            Ok(()) => {
                committed.insert(value);
                commits.fetch_add(1, Ordering::SeqCst);
            }
            Err(error) => {
                println!("transaction {transaction}: {error}");
                let abortable = matches!(&error, KafkaError::Transaction(failure) if failure.txn_requires_abort());
                if abortable && current.abort_transaction(TXN_TIMEOUT).is_ok() {
                    continue;
                }
                println!("transaction {transaction}: a new producer");
                producer = None;
            }
        }
    }
    println!(
        "{} of {transactions} transactions committed, producer re-created {recreated} times",
        committed.len()
    );
    committed
}

/// Flags of the cluster test's brokers (fast heartbeats so a killed broker
/// is noticed quickly).
const CLUSTER_ARGS: [&str; 2] = ["--broker-heartbeat-interval-ms", "500"];

#[test]
fn killing_the_transaction_coordinator_mid_commits_never_leaves_a_transaction_half_visible() {
    const TRANSACTIONS: usize = 120;
    const ID: &str = "eos-failover";
    let mut rng = seed("eos-failover");
    let mut cluster = Cluster::start("eos-failover", 3, &CLUSTER_ARGS);
    let bootstrap = cluster.bootstrap();
    kafka::create_topic_replicated(&bootstrap, "eos-pairs", 2, 3, &[]);
    let coordinator = wait_until("FindCoordinator", Duration::from_secs(30), || {
        cluster.transaction_coordinator(1, ID)
    });
    println!("the coordinator of {ID} is node {coordinator}");
    let kill_after = 20 + rng.below(40) as usize;
    let kill_delay = Duration::from_millis(rng.below(30));

    // The producer runs in its own thread, so that the kill lands at a
    // random point of a commit, not between two.
    let commits = Arc::new(AtomicUsize::new(0));
    let producing = {
        let bootstrap = bootstrap.clone();
        let commits = commits.clone();
        std::thread::spawn(move || commit_pairs(&bootstrap, ID, TRANSACTIONS, &commits))
    };
    wait_until("commits before the kill", Duration::from_secs(60), || {
        let count = commits.load(Ordering::SeqCst);
        if count >= kill_after {
            Ok(())
        } else {
            Err(format!("{count} commits"))
        }
    });
    std::thread::sleep(kill_delay);
    println!(
        "killing node {coordinator} {kill_delay:?} after commit {kill_after} ({} commits now)",
        commits.load(Ordering::SeqCst)
    );
    cluster.kill9(coordinator);
    let committed = producing.join().expect("the producer thread panicked");
    let after = wait_until("a new coordinator", Duration::from_secs(60), || {
        let node = cluster
            .nodes()
            .find(|node| *node != coordinator)
            .expect("a survivor");
        cluster.transaction_coordinator(node, ID)
    });
    println!("the coordinator of {ID} is now node {after}");

    let survivors = cluster
        .nodes()
        .filter(|node| *node != coordinator)
        .map(|node| cluster.broker(node).bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    let records = read_all(&survivors, "eos-pairs", 2, true);
    let mut per_transaction: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for record in &records {
        per_transaction
            .entry(record.value.as_str())
            .or_default()
            .push(record.partition);
    }
    let half: Vec<_> = per_transaction
        .iter()
        .filter(|(_, partitions)| {
            let mut sorted = partitions.to_vec();
            sorted.sort_unstable();
            sorted != [0, 1]
        })
        .collect();
    assert!(
        half.is_empty(),
        "transactions not seen as exactly one record in each partition: {half:?}"
    );
    let lost: Vec<_> = committed
        .iter()
        .filter(|value| !per_transaction.contains_key(value.as_str()))
        .collect();
    assert!(lost.is_empty(), "committed transactions not read: {lost:?}");
}
