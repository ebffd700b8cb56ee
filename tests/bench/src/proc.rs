//! What a process costs, from `/proc`: CPU time (user + system) and resident memory.

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux).
const TICKS_PER_SEC: u64 = 100;

/// CPU time `pid` has used so far (user + system), or zero when it is gone.
pub fn cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis are
    // state (3), …, utime (14), stime (15).
    let Some((_, rest)) = stat.rsplit_once(')') else { return Duration::ZERO };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // `rest` starts at field 3, so field N is at index N - 3.
    let total = ticks(14 - 3) + ticks(15 - 3);
    Duration::from_millis(total * 1000 / TICKS_PER_SEC)
}

/// CPU time used so far by every process whose command name is one of `names` (`postgres`,
/// `redis-server`: the machine's own services, which a process list of the stack leaves out).
pub fn cpu_of_named(names: &[&str]) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Duration::ZERO };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| names.contains(&comm.trim()))
        })
        .map(cpu)
        .sum()
}

/// `bytes` in MiB, as the report gives memory.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// `(current, peak)` resident memory of `pid` in bytes (`VmRSS`, `VmHWM`).
pub fn memory(pid: u32) -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return (0, 0) };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A line describing this machine: CPU model, cores, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0.0, |kb| kb as f64 / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores, {mem_gib:.0} GiB, Linux {}", kernel.trim())
}

/// How often [`RssWatch`] reads the processes' resident memory.
pub const RSS_EVERY: Duration = Duration::from_millis(50);

/// The largest resident memory (`VmRSS`) each of some processes reaches while it runs, read
/// every [`RSS_EVERY`]: which point of a run a peak belongs to, where `VmHWM` gives only the
/// whole run's.
pub struct RssWatch {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<(String, u64)>>,
}

impl RssWatch {
    /// Starts reading `pids`.
    pub fn start(pids: &[(&'static str, u32)]) -> Self {
        let pids = pids.to_vec();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut largest = vec![0u64; pids.len()];
            let mut every = tokio::time::interval(RSS_EVERY);
            loop {
                for (most, (_, pid)) in largest.iter_mut().zip(&pids) {
                    *most = (*most).max(memory(*pid).0);
                }
                tokio::select! {
                    _ = every.tick() => {}
                    _ = &mut stopped => break,
                }
            }
            pids.iter().zip(largest).map(|((name, _), most)| ((*name).to_owned(), most)).collect()
        });
        Self { stop, task }
    }

    /// Stops reading: the largest resident memory of each process in bytes, in the order given.
    pub async fn stop(self) -> Vec<(String, u64)> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_watch_sees_memory_that_is_held_only_while_it_reads() {
        const HELD: usize = 64 << 20;
        let me = std::process::id();
        let before = memory(me).0;
        let watch = RssWatch::start(&[("bench", me)]);
        // Touched page by page, so it is resident, then given back before the watch stops.
        let held = vec![1u8; HELD];
        tokio::time::sleep(RSS_EVERY * 4).await;
        assert_eq!(held.iter().step_by(4096).map(|&b| usize::from(b)).sum::<usize>(), HELD / 4096);
        drop(held);
        let seen = watch.stop().await;
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "bench");
        assert!(seen[0].1 >= before + HELD as u64 / 2, "saw {} bytes, {before} before", seen[0].1);
        assert!(memory(me).0 < seen[0].1, "the largest reading is not just the last one");
    }
}
