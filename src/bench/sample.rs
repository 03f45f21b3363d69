//! What a benchmark run's process holds and where its CPU goes, sampled while it runs: resident
//! memory by mapping kind at the moment of the highest RSS (`/proc/self/smaps`), and CPU seconds by
//! thread group (`/proc/self/task/*/stat`; a thread that ends between two samples loses at most
//! one interval).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Resident memory by kind, MB.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Breakdown {
    pub rss_mb: f64,
    /// Pages of libonnxruntime.so.
    pub onnxruntime_mb: f64,
    /// Pages of GStreamer, its plugins and the codec libraries (libav*, x264/x265, …).
    pub gstreamer_codecs_mb: f64,
    /// Pages of every other shared library.
    pub other_libraries_mb: f64,
    /// Pages of the vigil executable.
    pub vigil_mb: f64,
    /// The main heap (`[heap]`, brk).
    pub heap_mb: f64,
    /// Anonymous mappings: glibc's other malloc arenas, large allocations (frames, tensors, ONNX
    /// Runtime's arenas), thread stacks.
    pub anonymous_mb: f64,
    /// Everything else (model files, fonts, shared memory).
    pub other_mb: f64,
}

impl Breakdown {
    /// Parses `/proc/<pid>/smaps` text.
    pub fn parse(smaps: &str, exe: &str) -> Breakdown {
        let mut b = Breakdown::default();
        let mut slot: usize = 7;
        let mut kb = [0f64; 8];
        for line in smaps.lines() {
            let mut it = line.split_whitespace();
            let Some(first) = it.next() else { continue };
            if first.ends_with(':') {
                if first == "Rss:" {
                    kb[slot] += it.next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                }
                continue;
            }
            if !first.contains('-') {
                continue;
            }
            // a mapping header: range perms offset dev inode [path]
            let path = it.nth(4).unwrap_or("");
            let name = path.rsplit('/').next().unwrap_or(path);
            slot = if name.starts_with("libonnxruntime") {
                0
            } else if path.contains("gstreamer")
                || [
                    "libgst",
                    "libav",
                    "libsw",
                    "libx26",
                    "libpostproc",
                    "libdav1d",
                    "libvpx",
                    "libde265",
                    "libopenh264",
                ]
                .iter()
                .any(|p| name.starts_with(p))
            {
                1
            } else if name.contains(".so") {
                2
            } else if !exe.is_empty() && path == exe {
                3
            } else if path == "[heap]" {
                4
            } else if path.is_empty() || path.starts_with("[anon") || path == "[stack]" {
                5
            } else {
                6
            };
        }
        let mb = |k: f64| k / 1024.0;
        b.onnxruntime_mb = mb(kb[0]);
        b.gstreamer_codecs_mb = mb(kb[1]);
        b.other_libraries_mb = mb(kb[2]);
        b.vigil_mb = mb(kb[3]);
        b.heap_mb = mb(kb[4]);
        b.anonymous_mb = mb(kb[5]);
        b.other_mb = mb(kb[6] + kb[7]);
        b.rss_mb = mb(kb.iter().sum());
        b
    }
}

/// A thread's group: its name with the camera and the digits taken out (`analyse-bench-3` →
/// `analyse`, `queue12:src` → `queue:src`).
pub fn thread_group(comm: &str) -> String {
    let base = comm.split("-bench").next().unwrap_or(comm);
    let g: String = base.chars().filter(|c| !c.is_ascii_digit()).collect();
    let g = g.trim_end_matches(['-', '_']).to_string();
    if g.is_empty() { "other".into() } else { g }
}

/// (group, tid) → CPU seconds of this process's threads now.
fn thread_cpu() -> HashMap<(String, u32), f64> {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut out = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc/self/task") else { return out };
    for e in rd.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // pid (comm) state ... : comm may hold spaces and parentheses, so split at the last ')'
        let (Some(a), Some(b)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[a + 1..b];
        let f: Vec<&str> = stat[b + 1..].split_whitespace().collect();
        // fields after comm: state(0) … utime(11) stime(12)
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        out.insert((thread_group(comm), tid), (t(11) + t(12)) / tick);
    }
    out
}

/// What a [`Sampler`] saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Samples {
    /// The breakdown at the sample with the highest RSS.
    pub peak: Breakdown,
    /// CPU seconds by thread group, highest first.
    pub cpu_by_thread: Vec<(String, f64)>,
}

/// Samples this process every `every` on a thread of its own until [`Sampler::finish`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Samples>,
}

impl Sampler {
    pub fn start(every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let exe = std::fs::read_link("/proc/self/exe").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let handle = std::thread::spawn(move || {
            let mut peak = Breakdown::default();
            let mut cpu: HashMap<(String, u32), f64> = HashMap::new();
            loop {
                let done = s.load(Ordering::Relaxed);
                let rss = crate::telemetry::alloc::rss_mb();
                if rss > peak.rss_mb
                    && let Ok(t) = std::fs::read_to_string("/proc/self/smaps")
                {
                    peak = Breakdown::parse(&t, &exe);
                }
                for (k, v) in thread_cpu() {
                    let e = cpu.entry(k).or_insert(0.0);
                    *e = e.max(v);
                }
                if done {
                    break;
                }
                std::thread::sleep(every);
            }
            let mut groups: BTreeMap<String, f64> = BTreeMap::new();
            for ((g, _), v) in cpu {
                *groups.entry(g).or_insert(0.0) += v;
            }
            let mut cpu_by_thread: Vec<(String, f64)> = groups.into_iter().filter(|(_, v)| *v > 0.0).collect();
            cpu_by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
            Samples { peak, cpu_by_thread }
        });
        Sampler { stop, handle }
    }

    pub fn finish(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_pages_are_counted_by_the_kind_of_their_mapping() {
        let t = "\
55d0a000-55d0b000 r-xp 00000000 08:01 12 /work/target/release/vigil
Size:                  4 kB
Rss:                 100 kB
7f00-7f01 r-xp 00000000 08:01 13 /work/.deps/onnxruntime/libonnxruntime.so.1.32.0
Rss:                2048 kB
7f01-7f02 r-xp 00000000 08:01 14 /usr/lib/x86_64-linux-gnu/libavcodec.so.59.37.100
Rss:                1024 kB
7f02-7f03 r-xp 00000000 08:01 15 /usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstx264.so
Rss:                1024 kB
7f03-7f04 r-xp 00000000 08:01 16 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 512 kB
5600-5700 rw-p 00000000 00:00 0 [heap]
Rss:                3072 kB
7f05-7f06 rw-p 00000000 00:00 0
Rss:                4096 kB
7f06-7f07 rw-p 00000000 00:00 0 [stack]
Rss:                  24 kB
";
        let b = Breakdown::parse(t, "/work/target/release/vigil");
        assert!((b.vigil_mb - 100.0 / 1024.0).abs() < 1e-9);
        assert_eq!(b.onnxruntime_mb, 2.0);
        assert_eq!(b.gstreamer_codecs_mb, 2.0);
        assert_eq!(b.other_libraries_mb, 0.5);
        assert_eq!(b.heap_mb, 3.0);
        assert!((b.anonymous_mb - (4096.0 + 24.0) / 1024.0).abs() < 1e-9);
        let sum = b.onnxruntime_mb
            + b.gstreamer_codecs_mb
            + b.other_libraries_mb
            + b.vigil_mb
            + b.heap_mb
            + b.anonymous_mb
            + b.other_mb;
        assert!((b.rss_mb - sum).abs() < 1e-9);
    }

    #[test]
    fn thread_groups_drop_the_camera_and_the_numbers() {
        assert_eq!(thread_group("analyse-bench-3"), "analyse");
        assert_eq!(thread_group("ingest-bench-12"), "ingest");
        assert_eq!(thread_group("queue12:src"), "queue:src");
        assert_eq!(thread_group("tokio-runtime-w"), "tokio-runtime-w");
    }
}
