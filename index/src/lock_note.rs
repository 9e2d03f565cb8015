//! What a writer's `LOCK` file says about the writer holding it (its process, host and since
//! when), written as it takes the lock and read by the writers waiting behind it: a leaf, so that
//! an error ([`crate::Error::LockTimeout`]) can carry it.

use std::fs::File;
use std::path::Path;

/// The lock file a live index's writers hold (an exclusive advisory lock) while they change
/// it, and a build that replaces the directory holds while it does.
pub const LOCK_FILE: &str = "LOCK";

/// The most bytes of a note read: the longest [`note_holder`] writes is 112 (a 10-digit pid, a
/// 64-byte host name, a 20-digit time).
const NOTE_MAX_LEN: u64 = 128;

/// Writes who holds the lock into the locked `LOCK` file, `pid P host H since S\n` (the
/// process id, the host name where known, and the Unix time in seconds it took the lock), for
/// the writers waiting behind it to name ([`LockHolder::of`]). Best effort: a lock whose note
/// cannot be written still locks.
pub(crate) fn note_holder(mut f: &File) {
    use std::io::{Seek, Write};
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let host = host_name().map_or(String::new(), |h| format!("host {h} "));
    let note = format!("pid {} {host}since {since}\n", std::process::id());
    let _ = f
        .set_len(0)
        .and_then(|()| f.seek(std::io::SeekFrom::Start(0)))
        .and_then(|_| f.write_all(note.as_bytes()));
}

/// Who holds an index's writers' lock, as its `LOCK` file notes it: what a writer waiting
/// behind it tells its user (`bsa add` on stderr, Python in a warning). The pid is the
/// holder's in its own PID namespace and host: check the host before acting on it.
///
/// ```
/// use bsa_index::live::{LockHolder, Writer};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("idx");
/// bsa_index::IndexBuilder::new(64, &[1, 2]).build(&path)?;
/// assert_eq!(LockHolder::of(&path), None); // no writer
/// let w = Writer::open(&path)?;
/// let holder = LockHolder::of(&path).expect("a writer holds it");
/// assert_eq!(holder.pid, std::process::id());
/// assert!(holder.to_string().starts_with(&format!("process {}", holder.pid)));
/// drop(w);
/// assert_eq!(LockHolder::of(&path), None);
/// # Ok::<(), bsa_index::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockHolder {
    /// The holder's process id (in its own PID namespace: another container's may differ).
    pub pid: u32,
    /// Its host's name (its UTS namespace's: a container's own), where the system tells it.
    pub host: Option<String>,
    /// When it took the lock.
    pub since: std::time::SystemTime,
}

/// This host's name (Linux: the UTS namespace's, so a container's own), if the system tells it.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    let plain = !name.is_empty() && name.len() <= 64 && !name.contains(char::is_whitespace);
    plain.then(|| name.to_string())
}

impl LockHolder {
    /// The holder of `dir`'s lock, if a writer notes one in `LOCK` (a writer of a bsa before
    /// the note, or one between taking the lock and writing its note, does not). Read while a
    /// writer holds the lock, it is that writer; read when none does, `None`, unless a writer
    /// was killed holding it (its note stays until the next writer's).
    pub fn of(dir: &Path) -> Option<LockHolder> {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(File::open(dir.join(LOCK_FILE)).ok()?, NOTE_MAX_LEN),
            &mut text,
        )
        .ok()?;
        // A note is whole once its line ends (a reader may come while it is being written).
        let line = text.strip_suffix('\n')?;
        let words: Vec<&str> = line.split(' ').collect();
        let (pid, host, since) = match words[..] {
            ["pid", pid, "since", since] => (pid, None, since),
            ["pid", pid, "host", host, "since", since] => (pid, Some(host.to_string()), since),
            _ => return None,
        };
        Some(LockHolder {
            pid: pid.parse().ok()?,
            host,
            // Checked: a note's time past what `SystemTime` holds panicked in the addition.
            since: std::time::UNIX_EPOCH
                .checked_add(std::time::Duration::from_secs(since.parse().ok()?))?,
        })
    }
}

impl std::fmt::Display for LockHolder {
    /// `process P on host H, for 2 min 5 s` (how long it has held the lock; `for 0 s` when the
    /// clocks disagree; no host when the note names none).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.since.elapsed().map_or(0, |d| d.as_secs());
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        write!(f, "process {}", self.pid)?;
        if let Some(host) = &self.host {
            write!(f, " on host {host}")?;
        }
        write!(f, ", for ")?;
        match (h, m) {
            (0, 0) => write!(f, "{s} s"),
            (0, _) => write!(f, "{m} min {s} s"),
            _ => write!(f, "{h} h {m} min"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host name as long as [`host_name`] takes (EC2's `ip-...compute.internal` are over 40
    /// bytes) is read back: the note was cut at 64 bytes, before its line ended. A time too
    /// large for `SystemTime` panicked.
    #[test]
    fn the_longest_note_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let host = "h".repeat(64);
        let note = format!("pid 4294967295 host {host} since 18446744073709551615\n");
        assert_eq!(note.len(), 112);
        std::fs::write(dir.path().join(LOCK_FILE), &note).unwrap();
        // A time past what `SystemTime` holds (no writer writes one) names no holder.
        assert_eq!(LockHolder::of(dir.path()), None);
        let note = note.replace("18446744073709551615", "1765000000");
        std::fs::write(dir.path().join(LOCK_FILE), &note).unwrap();
        let holder = LockHolder::of(dir.path()).expect("a whole note");
        assert_eq!((holder.pid, holder.host), (u32::MAX, Some(host)));
    }
}
