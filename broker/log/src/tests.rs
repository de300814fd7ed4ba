//! Behaviour of the whole log on a real directory.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::batch::test_support::make_batch;
use crate::batch::{self, BatchHeader, TimestampType};
use crate::{AppendInfo, LogConfig, LogError, PartitionLog, TimestampMode};

const ALL: usize = usize::MAX;
const NO_HW: i64 = i64::MAX;

fn config() -> LogConfig {
    LogConfig {
        segment_ms: None,
        retention_ms: None,
        flush_ms: None,
        index_interval_bytes: 0,
        ..LogConfig::default()
    }
}

fn small_segments(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 150,
        ..config()
    }
}

fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config).expect("open").0
}

fn append(log: &mut PartitionLog, records: i32, ts: i64, payload: usize) -> AppendInfo {
    let mut b = make_batch(records, ts, payload);
    log.append(&mut b, TimestampMode::CreateTime)
        .expect("append")
}

/// Every batch in `bytes`, each fully validated (CRC included).
fn batches(bytes: &[u8]) -> Vec<BatchHeader> {
    batch::headers(bytes)
        .map(|r| {
            let (at, h) = r.expect("whole batches only");
            batch::validate(&bytes[at..at + h.size()]).expect("valid batch")
        })
        .collect()
}

fn read(
    log: &PartitionLog,
    offset: i64,
    max_bytes: usize,
    upper: i64,
    min_one: bool,
) -> Vec<BatchHeader> {
    let slice = log.read(offset, max_bytes, upper, min_one).expect("read");
    let bytes = slice.load().expect("load");
    assert_eq!(bytes.len(), slice.len());
    let found = batches(&bytes);
    if let Some(first) = found.first() {
        assert_eq!(first.base_offset, slice.first_offset);
        assert_eq!(
            found.last().map(|h| h.last_offset() + 1),
            Some(slice.next_offset)
        );
    } else {
        assert_eq!(slice.first_offset, offset);
    }
    found
}

fn bases(headers: &[BatchHeader]) -> Vec<i64> {
    headers.iter().map(|h| h.base_offset).collect()
}

fn files_with(dir: &Path, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(ext))
        .collect();
    names.sort();
    names
}

fn last_log_file(dir: &Path) -> std::path::PathBuf {
    dir.join(files_with(dir, ".log").pop().expect("a segment"))
}

#[test]
fn offsets_are_assigned_consecutively_across_batches_of_one_append() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    let mut records = make_batch(3, 10, 20);
    records.extend(make_batch(2, 11, 20));
    records.extend(make_batch(1, 12, 20));
    let info = log
        .append(&mut records, TimestampMode::CreateTime)
        .expect("append");
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (0, 5, 6)
    );
    assert_eq!(info.bytes, records.len() as u64);
    let next = append(&mut log, 4, 13, 10);
    assert_eq!((next.base_offset, next.last_offset), (6, 9));
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(bases(&read(&log, 0, ALL, NO_HW, false)), vec![0, 3, 5, 6]);
}

#[test]
fn a_fetch_offset_inside_a_batch_returns_that_whole_batch() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    for _ in 0..3 {
        append(&mut log, 5, 1, 30);
    }
    for offset in 5..10 {
        assert_eq!(bases(&read(&log, offset, ALL, NO_HW, false)), vec![5, 10]);
    }
    assert!(read(&log, 15, ALL, NO_HW, false).is_empty());
    assert!(matches!(
        log.read(16, ALL, NO_HW, false),
        Err(LogError::OffsetOutOfRange { offset: 16, .. })
    ));
    assert!(matches!(
        log.read(-1, ALL, NO_HW, false),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn max_bytes_limits_whole_batches_and_min_one_returns_an_oversized_first_batch() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    for _ in 0..4 {
        append(&mut log, 1, 1, 139); // 200 bytes each
    }
    assert_eq!(bases(&read(&log, 0, 450, NO_HW, false)), vec![0, 1]);
    assert_eq!(bases(&read(&log, 1, 400, NO_HW, false)), vec![1, 2]);
    assert!(read(&log, 0, 100, NO_HW, false).is_empty());
    assert_eq!(bases(&read(&log, 0, 100, NO_HW, true)), vec![0]);
    assert_eq!(bases(&read(&log, 0, 0, NO_HW, true)), vec![0]);
}

#[test]
fn batches_at_or_past_the_upper_bound_are_never_returned() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    for _ in 0..3 {
        append(&mut log, 2, 1, 10);
    }
    assert_eq!(bases(&read(&log, 0, ALL, 4, false)), vec![0, 2]);
    assert_eq!(bases(&read(&log, 0, ALL, 3, true)), vec![0, 2]);
    assert!(read(&log, 4, ALL, 4, true).is_empty());
    assert!(read(&log, 0, ALL, 0, true).is_empty());
}

#[test]
fn the_log_rolls_by_size_and_reads_find_every_offset_across_segments() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), small_segments(1000));
    for i in 0..20 {
        append(&mut log, 3, i, 239); // 300 bytes each
    }
    assert_eq!(log.segment_count(), 7);
    assert_eq!(files_with(tmp.path(), ".log").len(), 7);
    // Sealed segments have index files; the active one does not need them.
    assert_eq!(files_with(tmp.path(), ".index").len(), 6);
    assert_eq!(files_with(tmp.path(), ".timeindex").len(), 6);
    for name in files_with(tmp.path(), ".log") {
        assert!(fs::metadata(tmp.path().join(name)).expect("stat").len() <= 1000);
    }
    assert_eq!(log.size_bytes(), 20 * 300);
    for offset in 0..60 {
        let got = read(&log, offset, 1, NO_HW, true);
        assert_eq!(bases(&got), vec![offset / 3 * 3]);
    }
    // One read never spans segments.
    assert_eq!(bases(&read(&log, 0, ALL, NO_HW, false)), vec![0, 3, 6]);
}

#[test]
fn the_log_rolls_when_a_batch_is_newer_than_segment_ms_after_the_first() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(
        tmp.path(),
        LogConfig {
            segment_ms: Some(1000),
            ..config()
        },
    );
    append(&mut log, 1, 10_000, 10);
    append(&mut log, 1, 10_900, 10);
    append(&mut log, 1, 11_000, 10);
    assert_eq!(log.segment_count(), 1);
    append(&mut log, 1, 11_001, 10);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(files_with(tmp.path(), ".log").len(), 2);
}

#[test]
fn a_reopened_log_has_the_same_end_offset_and_bytes() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), small_segments(1000));
    for i in 0..12 {
        append(&mut log, 2, 100 + i, 150 + i as usize * 7);
    }
    let before: Vec<_> = (0..24)
        .map(|o| {
            log.read(o, 700, NO_HW, true)
                .expect("read")
                .load()
                .expect("load")
        })
        .collect();
    let (end, segments, size) = (log.log_end_offset(), log.segment_count(), log.size_bytes());
    log.close().expect("close");

    let (log, report) = PartitionLog::open(tmp.path(), small_segments(1000)).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.log_end_offset, end);
    assert_eq!(report.segments, segments);
    assert_eq!(
        (log.log_end_offset(), log.segment_count(), log.size_bytes()),
        (end, segments, size)
    );
    for (o, bytes) in (0..24).zip(before) {
        assert_eq!(
            log.read(o, 700, NO_HW, true)
                .expect("read")
                .load()
                .expect("load"),
            bytes
        );
    }
    assert_eq!(log.max_timestamp(), Some((111, 23)));
}

#[test]
fn a_torn_tail_is_cut_and_reported_on_open() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    for _ in 0..3 {
        append(&mut log, 2, 1, 50);
    }
    drop(log);
    let half = make_batch(2, 1, 50);
    let mut f = OpenOptions::new()
        .append(true)
        .open(last_log_file(tmp.path()))
        .expect("open segment");
    f.write_all(&half[..half.len() / 2]).expect("write");
    drop(f);

    let (mut log, report) = PartitionLog::open(tmp.path(), config()).expect("reopen");
    assert_eq!(report.truncated_bytes, (half.len() / 2) as u64);
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(append(&mut log, 1, 1, 5).base_offset, 6);
    assert_eq!(bases(&read(&log, 0, ALL, NO_HW, false)), vec![0, 2, 4, 6]);
}

#[test]
fn garbage_and_zeroes_after_the_last_batch_are_cut() {
    for tail in [
        vec![0u8; 4096],
        (0..=255u8).cycle().take(5000).collect::<Vec<u8>>(),
    ] {
        let tmp = TempDir::new().expect("tmp");
        let mut log = open(tmp.path(), config());
        append(&mut log, 2, 1, 50);
        drop(log);
        let mut f = OpenOptions::new()
            .append(true)
            .open(last_log_file(tmp.path()))
            .expect("open segment");
        f.write_all(&tail).expect("write");
        drop(f);
        let (log, report) = PartitionLog::open(tmp.path(), config()).expect("reopen");
        assert_eq!(report.truncated_bytes, tail.len() as u64);
        assert_eq!(log.log_end_offset(), 2);
    }
}

#[test]
fn a_batch_with_a_bad_crc_in_the_tail_is_cut_with_everything_after_it() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    let sizes: Vec<u64> = (0..4).map(|_| append(&mut log, 1, 1, 40).bytes).collect();
    drop(log);
    let path = last_log_file(tmp.path());
    let mut bytes = fs::read(&path).expect("read");
    let third = (sizes[0] + sizes[1]) as usize;
    bytes[third + batch::HEADER_LEN + 5] ^= 0xff;
    fs::write(&path, &bytes).expect("write");

    let (log, report) = PartitionLog::open(tmp.path(), config()).expect("reopen");
    assert_eq!(report.truncated_bytes, sizes[2] + sizes[3]);
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(
        fs::metadata(&path).expect("stat").len(),
        sizes[0] + sizes[1]
    );
}

#[test]
fn an_invalid_append_is_rejected_and_stores_nothing() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    append(&mut log, 1, 1, 10);
    let size = log.size_bytes();

    let mut bad_crc = make_batch(2, 1, 10);
    let mut corrupt = make_batch(2, 1, 10);
    corrupt[batch::HEADER_LEN] ^= 1;
    bad_crc.extend(&corrupt);
    let before = bad_crc.clone();
    assert!(matches!(
        log.append(&mut bad_crc, TimestampMode::CreateTime),
        Err(LogError::CorruptBatch(_))
    ));
    assert_eq!(bad_crc, before, "a rejected buffer is left untouched");

    let mut bad_magic = make_batch(1, 1, 10);
    bad_magic[16] = 1;
    let mut trailing = make_batch(1, 1, 10);
    trailing.extend([0u8; 7]);
    let mut overlong = make_batch(1, 1, 10);
    overlong.truncate(overlong.len() - 1);
    for mut records in [bad_magic, trailing, overlong, Vec::new()] {
        assert!(matches!(
            log.append(&mut records, TimestampMode::CreateTime),
            Err(LogError::InvalidBatch(_))
        ));
    }
    assert_eq!((log.log_end_offset(), log.size_bytes()), (1, size));
    assert_eq!(
        fs::metadata(last_log_file(tmp.path())).expect("stat").len(),
        size
    );
}

#[test]
fn a_failed_write_leaves_no_partial_batch_and_the_log_usable() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    append(&mut log, 2, 1, 30);
    let size = log.size_bytes();
    log.fail_next_write_after(40);
    let mut b = make_batch(3, 1, 100);
    assert!(matches!(
        log.append(&mut b, TimestampMode::CreateTime),
        Err(LogError::Io(_))
    ));
    assert_eq!((log.log_end_offset(), log.size_bytes()), (2, size));
    assert_eq!(
        fs::metadata(last_log_file(tmp.path())).expect("stat").len(),
        size
    );
    assert_eq!(append(&mut log, 1, 1, 10).base_offset, 2);
    assert_eq!(bases(&read(&log, 0, ALL, NO_HW, false)), vec![0, 2]);
    drop(log);
    let (_, report) = PartitionLog::open(tmp.path(), config()).expect("reopen");
    assert_eq!((report.truncated_bytes, report.log_end_offset), (0, 3));
}

#[test]
fn page_drops_step_behind_the_tail_and_restart_below_a_truncation() {
    const MIB: u64 = 1 << 20;
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    let mut drops = Vec::new();
    let mut ends = Vec::new();
    for i in 0..40 {
        append(&mut log, 1, i64::from(i), MIB as usize);
        ends.push(log.log_end_offset());
        if let Some(d) = log.pages_to_drop(8 * MIB) {
            drops.push((log.size_bytes(), d.covers()));
            d.run();
        }
    }
    // Once per 16 MiB, up to 8 MiB behind the tail.
    assert_eq!(drops.len(), 2, "{drops:?}");
    assert!(
        drops
            .iter()
            .all(|&(size, len)| len % (16 * MIB) == 0 && len + 8 * MIB <= size)
    );
    assert_eq!(drops[1].1, 32 * MIB);
    assert!(log.pages_to_drop(8 * MIB).is_none(), "nothing new to drop");
    // Cut back to ~10 MiB: what is written again there is dropped again.
    log.truncate_to(ends[9]).expect("truncate");
    let mut again = None;
    for i in 0..20 {
        append(&mut log, 1, i64::from(i), MIB as usize);
        again = again.or(log.pages_to_drop(8 * MIB).map(|d| d.covers()));
    }
    assert_eq!(again, Some(16 * MIB));
    // Advice only: every batch reads back whole and valid.
    assert_eq!(read(&log, 0, ALL, NO_HW, false).len(), 30);
}

#[test]
fn retention_by_bytes_deletes_the_oldest_segments_and_moves_the_start() {
    let tmp = TempDir::new().expect("tmp");
    let mut cfg = small_segments(1000);
    let mut log = open(tmp.path(), cfg.clone());
    for i in 0..20 {
        append(&mut log, 3, i, 239); // 300 bytes, 3 batches per segment
    }
    assert_eq!(log.segment_count(), 7);
    cfg.retention_bytes = Some(2000);
    log.update_config(cfg.clone());
    let report = log.enforce_retention(0).expect("retention");
    // 6000 bytes: dropping 900-byte segments while what remains is >= 2000.
    assert_eq!((report.segments_deleted, report.bytes_deleted), (4, 3600));
    assert_eq!(report.log_start_offset, 36);
    assert_eq!(log.log_start_offset(), 36);
    assert_eq!(log.size_bytes(), 2400);
    assert_eq!(files_with(tmp.path(), ".log").len(), 3);
    assert_eq!(files_with(tmp.path(), ".index").len(), 2);
    assert!(matches!(
        log.read(35, ALL, NO_HW, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(bases(&read(&log, 36, 1, NO_HW, true)), vec![36]);
    drop(log);
    let log = open(tmp.path(), cfg);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (36, 60));
}

#[test]
fn retention_by_time_deletes_expired_segments_and_rolls_an_expired_active_one() {
    let tmp = TempDir::new().expect("tmp");
    let mut cfg = small_segments(1000);
    let mut log = open(tmp.path(), cfg.clone());
    for i in 0..10 {
        append(&mut log, 1, 1_000 + i * 100, 239);
    }
    // Segments: [1000,1100,1200] [1300..1500] [1600..1800] [1900]
    cfg.retention_ms = Some(1_000);
    log.update_config(cfg);
    let report = log.enforce_retention(2_650).expect("retention");
    assert_eq!(report.segments_deleted, 2);
    assert_eq!(log.log_start_offset(), 6);
    assert_eq!(files_with(tmp.path(), ".log").len(), 2);

    let report = log.enforce_retention(10_000).expect("retention");
    assert_eq!(report.segments_deleted, 2);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (10, 10));
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.size_bytes(), 0);
    assert!(read(&log, 10, ALL, NO_HW, true).is_empty());
    assert_eq!(append(&mut log, 1, 20_000, 10).base_offset, 10);
}

#[test]
fn retention_below_a_high_watermark_keeps_uncommitted_segments() {
    let tmp = TempDir::new().expect("tmp");
    let mut cfg = small_segments(1000);
    cfg.retention_ms = Some(1);
    let mut log = open(tmp.path(), cfg);
    for i in 0..9 {
        append(&mut log, 1, i, 239);
    }
    let report = log
        .enforce_retention_below(1_000_000, 4)
        .expect("retention");
    assert_eq!(report.segments_deleted, 1);
    assert_eq!(log.log_start_offset(), 3);
}

#[test]
fn a_read_slice_outlives_the_deletion_of_its_segment() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), small_segments(1000));
    for i in 0..6 {
        append(&mut log, 1, i, 239);
    }
    let slice = log.read(0, ALL, NO_HW, false).expect("read");
    log.advance_log_start(4).expect("advance");
    assert!(!tmp.path().join(format!("{:020}.log", 0)).exists());
    assert_eq!(bases(&batches(&slice.load().expect("load"))), vec![0, 1, 2]);
}

#[test]
fn advance_log_start_persists_inside_a_segment_and_deletes_whole_ones() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), small_segments(1000));
    for i in 0..9 {
        append(&mut log, 1, i, 239);
    }
    log.advance_log_start(1).expect("advance");
    assert_eq!((log.log_start_offset(), log.segment_count()), (1, 3));
    // The batch holding the start offset is served whole.
    assert_eq!(bases(&read(&log, 1, 1, NO_HW, true)), vec![1]);
    assert!(matches!(
        log.advance_log_start(10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    log.advance_log_start(0)
        .expect("moving backwards is a no-op");
    drop(log);

    let mut log = open(tmp.path(), small_segments(1000));
    assert_eq!(log.log_start_offset(), 1);
    log.advance_log_start(7).expect("advance");
    assert_eq!((log.log_start_offset(), log.segment_count()), (7, 1));
    drop(log);
    let log = open(tmp.path(), small_segments(1000));
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (7, 9));
    log.delete().expect("delete");
    assert!(!tmp.path().exists());
}

#[test]
fn batch_for_timestamp_finds_the_first_batch_reaching_the_timestamp() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), small_segments(1000));
    let stamps = [100, 200, 300, 250, 400, 400, 500, 450, 600, 700];
    for ts in stamps {
        append(&mut log, 2, ts, 239);
    }
    let find = |ts: i64| {
        log.batch_for_timestamp(ts).expect("lookup").map(|s| {
            let h = batches(&s.load().expect("load"));
            assert_eq!(h.len(), 1);
            (h[0].base_offset, h[0].max_timestamp)
        })
    };
    assert_eq!(find(i64::MIN), Some((0, 100)));
    assert_eq!(find(100), Some((0, 100)));
    assert_eq!(find(101), Some((2, 200)));
    assert_eq!(find(260), Some((4, 300)));
    assert_eq!(find(400), Some((8, 400)));
    assert_eq!(find(460), Some((12, 500)));
    assert_eq!(find(700), Some((18, 700)));
    assert_eq!(find(701), None);
    assert_eq!(log.max_timestamp(), Some((700, 19)));
    drop(log);
    let log = open(tmp.path(), small_segments(1000));
    assert_eq!(log.max_timestamp(), Some((700, 19)));
    let s = log
        .batch_for_timestamp(460)
        .expect("lookup")
        .expect("found");
    assert_eq!(s.first_offset, 12);
}

#[test]
fn missing_or_corrupt_index_files_are_rebuilt_on_open() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), small_segments(1000));
    for i in 0..9 {
        append(&mut log, 2, i * 10, 239);
    }
    let expected: Vec<_> = (0..18)
        .map(|o| {
            log.read(o, 1, NO_HW, true)
                .expect("read")
                .load()
                .expect("load")
        })
        .collect();
    drop(log);
    let index = |name: &str| tmp.path().join(name);
    fs::remove_file(index("00000000000000000000.index")).expect("rm");
    fs::write(index("00000000000000000006.index"), [1, 2, 3]).expect("garble");
    fs::write(index("00000000000000000006.timeindex"), [0u8; 24]).expect("garble");

    let (log, report) = PartitionLog::open(tmp.path(), small_segments(1000)).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    assert!(index("00000000000000000000.index").exists());
    assert_eq!(
        fs::read(index("00000000000000000006.index"))
            .expect("read")
            .len()
            % 8,
        0
    );
    for (o, bytes) in (0..18).zip(expected) {
        assert_eq!(
            log.read(o, 1, NO_HW, true)
                .expect("read")
                .load()
                .expect("load"),
            bytes
        );
    }
    assert_eq!(log.max_timestamp(), Some((80, 17)));
}

#[test]
fn a_sealed_segment_shorter_than_its_index_says_is_rescanned_and_cut() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), small_segments(1000));
    for i in 0..6 {
        append(&mut log, 2, i, 239);
    }
    drop(log);
    let first = tmp.path().join("00000000000000000000.log");
    let f = OpenOptions::new().write(true).open(&first).expect("open");
    f.set_len(890).expect("cut");
    drop(f);

    let (log, report) = PartitionLog::open(tmp.path(), small_segments(1000)).expect("reopen");
    assert_eq!(report.truncated_bytes, 290);
    assert_eq!(log.log_end_offset(), 12);
    assert_eq!(bases(&read(&log, 0, ALL, NO_HW, false)), vec![0, 2]);
    // The lost offsets now form a gap; a fetch there moves on to what follows.
    assert_eq!(bases(&read(&log, 4, 1, NO_HW, true)), vec![6]);
}

#[test]
fn log_append_time_rewrites_the_timestamp_with_a_valid_crc() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    let mut records = make_batch(3, 5, 40);
    records.extend(make_batch(1, 6, 40));
    let info = log
        .append(&mut records, TimestampMode::LogAppendTime(123_456))
        .expect("append");
    assert_eq!(info.log_append_time, Some(123_456));
    let stored = read(&log, 0, ALL, NO_HW, false);
    assert_eq!(stored.len(), 2);
    for h in stored {
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(h.max_timestamp, 123_456);
    }
    assert_eq!(log.max_timestamp(), Some((123_456, 2)));
}

#[test]
fn leader_epoch_is_stamped_without_breaking_the_crc() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    let mut b = make_batch(2, 5, 10);
    log.append_with_leader_epoch(&mut b, TimestampMode::CreateTime, 9)
        .expect("append");
    assert_eq!(
        read(&log, 0, ALL, NO_HW, false)[0].partition_leader_epoch,
        9
    );
}

/// A follower's copy: the leader's stored bytes go in untouched when they
/// sit at this log's end with this epoch, and are refused, with nothing
/// written, otherwise.
#[test]
fn a_placed_append_writes_the_bytes_as_they_are_or_nothing() {
    let leader_dir = TempDir::new().expect("tmp");
    let mut leader = open(leader_dir.path(), config());
    let mut placed = Vec::new();
    for (records, epoch) in [(2, 4), (3, 4), (1, 5)] {
        let mut b = make_batch(records, 5, 10);
        leader
            .append_with_leader_epoch(&mut b, TimestampMode::CreateTime, epoch)
            .expect("append");
        placed.push((b, epoch));
    }
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    // Not at this log's end (it is empty): nothing written.
    assert_eq!(log.append_placed(&placed[1].0, 4).expect("checked"), None);
    // At the end, but another epoch: nothing written.
    assert_eq!(log.append_placed(&placed[0].0, 3).expect("checked"), None);
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    for (b, epoch) in &placed {
        let info = log
            .append_placed(b, *epoch)
            .expect("append")
            .expect("placed");
        assert_eq!(
            info.base_offset,
            BatchHeader::parse(b).expect("header").base_offset
        );
    }
    assert_eq!(log.log_end_offset(), 6);
    let theirs = leader
        .read(0, ALL, NO_HW, false)
        .expect("read")
        .load()
        .expect("load");
    let ours = log
        .read(0, ALL, NO_HW, false)
        .expect("read")
        .load()
        .expect("load");
    assert_eq!(ours, theirs);
    // A corrupt batch is refused as in any append.
    let mut bad = make_batch(1, 5, 10);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    batch::set_base_offset(&mut bad, 6);
    batch::set_partition_leader_epoch(&mut bad, 5);
    assert!(matches!(
        log.append_placed(&bad, 5),
        Err(LogError::CorruptBatch(_))
    ));
    assert_eq!(log.log_end_offset(), 6);
}

/// A leader's own proposal had its CRC checked when it came in: the log
/// skips that check but still refuses a batch that is not one.
#[test]
fn a_checked_append_skips_only_the_crc() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    let mut flipped = make_batch(2, 5, 10);
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let mut copy = flipped.clone();
    assert!(matches!(
        log.append_with_leader_epoch(&mut copy, TimestampMode::CreateTime, 1),
        Err(LogError::CorruptBatch(_))
    ));
    let info = log
        .append_checked_with_leader_epoch(&mut flipped, TimestampMode::CreateTime, 1)
        .expect("the caller vouches for the CRC");
    assert_eq!((info.base_offset, info.last_offset), (0, 1));
    let mut short = make_batch(1, 5, 10);
    short.truncate(short.len() - 1);
    assert!(matches!(
        log.append_checked_with_leader_epoch(&mut short, TimestampMode::CreateTime, 1),
        Err(LogError::InvalidBatch(_))
    ));
    assert_eq!(log.log_end_offset(), 2);
}

#[test]
fn flush_if_due_syncs_only_data_older_than_flush_ms() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(
        tmp.path(),
        LogConfig {
            flush_ms: Some(1000),
            ..config()
        },
    );
    assert!(!log.flush_if_due(Instant::now()).expect("flush"));
    append(&mut log, 1, 1, 10);
    let now = Instant::now();
    assert!(!log.flush_if_due(now).expect("flush"));
    assert!(
        log.flush_if_due(now + Duration::from_secs(2))
            .expect("flush")
    );
    assert!(
        !log.flush_if_due(now + Duration::from_secs(4))
            .expect("flush")
    );

    log.update_config(LogConfig {
        flush_messages: Some(1),
        flush_ms: Some(1000),
        ..config()
    });
    append(&mut log, 1, 1, 10);
    assert!(
        !log.flush_if_due(now + Duration::from_secs(9))
            .expect("flush")
    );
}

#[test]
fn truncate_to_drops_the_batch_containing_the_offset_and_everything_after() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), small_segments(1000));
    for i in 0..9 {
        append(&mut log, 2, i, 239);
    }
    assert_eq!(log.segment_count(), 3);
    assert_eq!(log.truncate_to(9).expect("truncate"), 8);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.size_bytes(), 4 * 300);
    assert_eq!(log.max_timestamp(), Some((3, 7)));
    assert_eq!(append(&mut log, 1, 50, 10).base_offset, 8);
    assert_eq!(log.truncate_to(6).expect("truncate"), 6);
    drop(log);
    let (log, report) = PartitionLog::open(tmp.path(), small_segments(1000)).expect("reopen");
    assert_eq!((report.truncated_bytes, log.log_end_offset()), (0, 6));
    assert_eq!(bases(&read(&log, 0, ALL, NO_HW, false)), vec![0, 2, 4]);
}

#[test]
fn scan_headers_while_stops_early_and_reset_restarts_the_log_empty() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), small_segments(1000));
    for i in 0..9 {
        append(&mut log, 2, i, 239);
    }
    let mut seen = Vec::new();
    log.scan_headers_while(3, |h| {
        seen.push(h.base_offset);
        seen.len() < 4
    })
    .expect("scan");
    assert_eq!(
        seen,
        vec![2, 4, 6, 8],
        "crosses a segment boundary, then stops"
    );
    log.reset(40).expect("reset");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (40, 40));
    assert_eq!((log.segment_count(), log.size_bytes()), (1, 0));
    assert_eq!(append(&mut log, 1, 50, 10).base_offset, 40);
    drop(log);
    let log = open(tmp.path(), small_segments(1000));
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (40, 41));
    assert_eq!(files_with(tmp.path(), "log").len(), 1);
}

/// Random appends, reads, rolls, restarts and start-offset moves, checked
/// against a plain list of the batches that should be in the log.
#[test]
fn random_operations_match_a_simple_model() {
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }
    for seed in 1..=4u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let tmp = TempDir::new().expect("tmp");
        let cfg = LogConfig {
            segment_bytes: 700 + rng.next(2000),
            index_interval_bytes: rng.next(400) as u32,
            ..config()
        };
        let mut log = open(tmp.path(), cfg.clone());
        // (base offset, bytes) of every stored batch, in order.
        let mut model: Vec<(i64, Vec<u8>)> = Vec::new();
        let mut end = 0i64;
        let mut start = 0i64;
        for step in 0..300 {
            match rng.next(10) {
                0..=4 => {
                    let mut records = Vec::new();
                    for _ in 0..=rng.next(3) {
                        records.extend(make_batch(
                            1 + rng.next(5) as i32,
                            step,
                            rng.next(300) as usize,
                        ));
                    }
                    log.append(&mut records, TimestampMode::CreateTime)
                        .expect("append");
                    for (at, h) in batch::headers(&records).map(|r| r.expect("header")) {
                        model.push((h.base_offset, records[at..at + h.size()].to_vec()));
                        end = h.last_offset() + 1;
                    }
                }
                5..=7 if end > start => {
                    let offset = start + rng.next((end - start) as u64) as i64;
                    let max_bytes = rng.next(1500) as usize;
                    let slice = log.read(offset, max_bytes, NO_HW, true).expect("read");
                    let got = slice.load().expect("load");
                    let first = model
                        .iter()
                        .position(|(b, bytes)| {
                            let h = batch::parse(bytes).expect("model batch");
                            *b <= offset && offset <= h.last_offset()
                        })
                        .expect("offset is in the model");
                    assert_eq!(
                        &got[..model[first].1.len()],
                        &model[first].1[..],
                        "seed {seed} step {step}"
                    );
                    let mut expected = Vec::new();
                    for (_, bytes) in &model[first..] {
                        if expected.len() + bytes.len() > max_bytes.max(model[first].1.len()) {
                            break;
                        }
                        expected.extend_from_slice(bytes);
                    }
                    assert!(got.len() <= expected.len(), "seed {seed} step {step}");
                    assert_eq!(&got[..], &expected[..got.len()], "seed {seed} step {step}");
                }
                8 => {
                    drop(log);
                    let (reopened, report) =
                        PartitionLog::open(tmp.path(), cfg.clone()).expect("reopen");
                    assert_eq!(report.truncated_bytes, 0);
                    log = reopened;
                    assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
                }
                _ if end > start => {
                    start += rng.next((end - start) as u64 / 4 + 1) as i64;
                    log.advance_log_start(start).expect("advance");
                    model.retain(|(_, bytes)| {
                        batch::parse(bytes).expect("model").last_offset() >= start
                    });
                }
                _ => {}
            }
            assert_eq!(log.log_end_offset(), end);
            assert_eq!(log.log_start_offset(), start);
        }
    }
}

/// Rough throughput check: `cargo test -p skiff-log --release -- --ignored --nocapture`.
#[test]
#[ignore = "throughput measurement, not a correctness test"]
fn throughput_of_64_kib_batches() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), LogConfig::default());
    let template = make_batch(100, 1, 64 * 1024);
    let count = 4000;
    let started = Instant::now();
    for _ in 0..count {
        let mut b = template.clone();
        log.append(&mut b, TimestampMode::CreateTime)
            .expect("append");
    }
    let total = (template.len() * count) as f64;
    let append_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut offset = 0;
    let mut read_bytes = 0;
    while offset < log.log_end_offset() {
        let slice = log.read(offset, 1 << 20, NO_HW, true).expect("read");
        read_bytes += slice.load().expect("load").len();
        offset = slice.next_offset;
    }
    let read_s = started.elapsed().as_secs_f64();
    assert_eq!(read_bytes as f64, total);
    println!(
        "append {:.0} MB/s, read {:.0} MB/s",
        total / append_s / 1e6,
        total / read_s / 1e6
    );
}

#[test]
fn a_due_flush_is_taken_once_and_a_failed_one_comes_back() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(
        tmp.path(),
        LogConfig {
            flush_ms: Some(1000),
            ..config()
        },
    );
    append(&mut log, 1, 1, 10);
    let now = Instant::now();
    assert!(log.take_due_flush(now).is_none(), "not due yet");
    let later = now + Duration::from_secs(2);
    let pending = log.take_due_flush(later).expect("due");
    assert!(log.take_due_flush(later).is_none(), "taken once");
    log.flush_failed(pending);
    let again = log
        .take_due_flush(later)
        .expect("due again after a failed sync");
    again.sync().expect("sync");
}

#[test]
fn scan_headers_visits_every_batch_from_an_offset_across_segments() {
    let dir = TempDir::new().expect("tempdir");
    let mut log = open(dir.path(), small_segments(300));
    let mut bases = Vec::new();
    for i in 0..8 {
        bases.push(append(&mut log, 2, 1_000 + i, 60).base_offset);
    }
    assert!(log.segment_count() > 2, "test needs several segments");
    let mut seen = Vec::new();
    log.scan_headers(0, |h| seen.push(h.base_offset))
        .expect("scan");
    assert_eq!(seen, bases);
    // From inside a batch: that batch is included.
    let mut seen = Vec::new();
    log.scan_headers(bases[3] + 1, |h| seen.push(h.base_offset))
        .expect("scan");
    assert_eq!(seen, bases[3..].to_vec());
    let mut seen = Vec::new();
    log.scan_headers(log.log_end_offset(), |h| seen.push(h.base_offset))
        .expect("scan");
    assert!(seen.is_empty());
}

/// Whether `dir`'s file system takes direct I/O (tmpfs does not).
fn direct_io_works(dir: &Path) -> bool {
    let probe = dir.join("probe");
    fs::write(&probe, b"").expect("probe");
    let ok = crate::direct::DirectWriter::open(&probe).is_ok();
    fs::remove_file(probe).expect("remove probe");
    ok
}

#[test]
fn appends_past_the_page_cache_store_the_same_log_and_reopen_without_a_cut() {
    let (tmp_a, tmp_b) = (TempDir::new().expect("tmp"), TempDir::new().expect("tmp"));
    let direct = direct_io_works(tmp_b.path());
    let (mut cached, mut uncached) = (
        open(tmp_a.path(), small_segments(1_000_000)),
        open(tmp_b.path(), small_segments(1_000_000)),
    );
    let mut padded = false;
    // Small appends (through the cache) between large ones (past it when
    // on), none a whole number of 4 KiB blocks; direct appends are switched
    // off and on again, and both logs are cut back once, as Raft does.
    let sizes = [
        10, 70_000, 65_500, 5, 90_000, 1, 200_000, 300, 65_535, 123_456, 7, 66_000,
    ];
    for (i, &payload) in sizes.iter().cycle().take(60).enumerate() {
        uncached.set_direct_appends(i % 10 != 7);
        let ts = i64::try_from(i).expect("small");
        let a = append(&mut cached, 1 + (i % 3) as i32, ts, payload);
        let b = append(&mut uncached, 1 + (i % 3) as i32, ts, payload);
        assert_eq!(a, b);
        let file_bytes: u64 = files_with(tmp_b.path(), ".log")
            .iter()
            .map(|f| fs::metadata(tmp_b.path().join(f)).expect("stat").len())
            .sum();
        padded |= file_bytes > uncached.size_bytes();
        if i == 40 {
            let cut = a.base_offset - 5;
            assert_eq!(cached.truncate_to(cut).ok(), uncached.truncate_to(cut).ok());
        }
        assert_eq!(
            read(&cached, 0, ALL, NO_HW, false),
            read(&uncached, 0, ALL, NO_HW, false)
        );
    }
    assert!(cached.segment_count() > 2, "the logs rolled");
    assert_eq!(padded, direct, "direct writes pad their last block");
    let bytes = read(&cached, 0, ALL, NO_HW, false);
    let end = cached.log_end_offset();
    // A crash, not a close: the active segment keeps its padding.
    drop(uncached);
    let (reopened, report) =
        PartitionLog::open(tmp_b.path(), small_segments(1_000_000)).expect("reopen");
    assert_eq!((report.truncated_bytes, report.log_end_offset), (0, end));
    assert_eq!(read(&reopened, 0, ALL, NO_HW, false), bytes);
    for name in files_with(tmp_a.path(), ".log") {
        let a = fs::read(tmp_a.path().join(&name)).expect("read");
        assert_eq!(
            a,
            fs::read(tmp_b.path().join(&name)).expect("read"),
            "{name}"
        );
    }
}

#[test]
fn zeros_shorter_than_a_block_are_padding_and_cut_without_a_report() {
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), config());
    append(&mut log, 2, 1, 50);
    drop(log);
    let path = last_log_file(tmp.path());
    let len = fs::metadata(&path).expect("stat").len();
    let mut f = OpenOptions::new().append(true).open(&path).expect("open");
    f.write_all(&[0u8; 4000]).expect("write");
    drop(f);
    let (log, report) = PartitionLog::open(tmp.path(), config()).expect("reopen");
    assert_eq!((report.truncated_bytes, log.log_end_offset()), (0, 2));
    assert_eq!(fs::metadata(&path).expect("stat").len(), len);
    drop(log);

    // A sealed segment with padding (its trim lost in a crash) too.
    let tmp = TempDir::new().expect("tmp");
    let mut log = open(tmp.path(), small_segments(1000));
    for i in 0..8 {
        append(&mut log, 1, i, 300);
    }
    assert!(log.segment_count() > 1);
    drop(log);
    let first = tmp.path().join(files_with(tmp.path(), ".log").remove(0));
    let mut f = OpenOptions::new().append(true).open(&first).expect("open");
    f.write_all(&[0u8; 100]).expect("write");
    drop(f);
    let (log, report) = PartitionLog::open(tmp.path(), small_segments(1000)).expect("reopen");
    assert_eq!((report.truncated_bytes, log.log_end_offset()), (0, 8));
    for offset in 0..8 {
        assert_eq!(bases(&read(&log, offset, 1, NO_HW, true)), vec![offset]);
    }
}
