//! Enrollment from the command line: read the token from stdin when it is not given (or is
//! `-`), so it stays out of the shell history and `ps`; and, when run as root in a state
//! directory owned by the service user, hand the new files to that user so the service can
//! read them.

use crate::plane::identity::{IDENTITY_FILE, KEY_FILE};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Longest token accepted from stdin; real tokens are far shorter.
const MAX_TOKEN_LEN: usize = 1024;

/// The token: `arg` itself, or the first line of stdin when `arg` is `None` or `-`.
pub fn token(arg: Option<&str>) -> anyhow::Result<String> {
    match arg {
        Some(token) if token != "-" => Ok(token.to_string()),
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("enrollment token: ");
                let _ = std::io::stderr().flush();
            }
            read_token(stdin.lock())
        }
    }
}

/// The first line of `input`, trimmed; empty or oversized input is an error.
pub fn read_token(mut input: impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let token = line.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "no enrollment token: pass --token TOKEN or write it to stdin"
    );
    anyhow::ensure!(
        token.len() <= MAX_TOKEN_LEN,
        "the enrollment token is longer than {MAX_TOKEN_LEN} bytes"
    );
    Ok(token.to_string())
}

/// After a root enrollment: gives the key and identity to the owner of `state_dir` when
/// that owner is not root (the package creates `/var/lib/farmhand` for `farmhand`).
/// Returns the uid the files now belong to when it changed them.
pub fn hand_over(state_dir: &Path) -> std::io::Result<Option<u32>> {
    let dir = std::fs::metadata(state_dir)?;
    let mut changed = None;
    for name in [KEY_FILE, IDENTITY_FILE] {
        let path = state_dir.join(name);
        let file = std::fs::metadata(&path)?;
        // Only root-owned files: an unprivileged user could not chown them anyway.
        if file.uid() == 0 && dir.uid() != 0 {
            std::os::unix::fs::chown(&path, Some(dir.uid()), Some(dir.gid()))?;
            changed = Some(dir.uid());
        }
    }
    Ok(changed)
}

/// [`hand_over`] for `main`: says what it changed; a failure is an error with a hint.
pub fn finish(state_dir: &Path) -> anyhow::Result<()> {
    let changed = hand_over(state_dir).map_err(|e| {
        anyhow::anyhow!(
            "enrolled, but cannot give the key to the state directory's owner: {e}; \
             run: chown -R farmhand:farmhand {}",
            state_dir.display()
        )
    })?;
    if let Some(uid) = changed {
        println!(
            "gave {KEY_FILE} and {IDENTITY_FILE} to uid {uid}, the owner of {}",
            state_dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_line_trimmed_and_refuses_empty_input() {
        assert_eq!(read_token(&b"  tok-1 \nmore"[..]).unwrap(), "tok-1");
        assert!(read_token(&b"\n"[..])
            .unwrap_err()
            .to_string()
            .contains("--token"));
        assert!(read_token(&b""[..]).is_err());
        assert!(read_token(&[b'x'; 2000][..]).is_err());
        assert_eq!(token(Some("given")).unwrap(), "given");
    }

    #[test]
    fn leaves_files_alone_when_owners_already_match() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "k").unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), "{}").unwrap();
        // Same owner (whoever runs the test): nothing to do.
        assert_eq!(hand_over(dir.path()).unwrap(), None);
        assert!(hand_over(&dir.path().join("missing")).is_err());
    }

    /// The real hand-over needs root (CI runs as root); elsewhere there is nothing to test.
    #[test]
    fn as_root_gives_the_files_to_the_state_dirs_owner() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join(KEY_FILE);
        std::fs::write(&key, "k").unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), "{}").unwrap();
        if std::fs::metadata(&key).unwrap().uid() != 0 {
            return;
        }
        let nobody = 65534;
        std::os::unix::fs::chown(dir.path(), Some(nobody), Some(nobody)).unwrap();
        assert_eq!(hand_over(dir.path()).unwrap(), Some(nobody));
        for name in [KEY_FILE, IDENTITY_FILE] {
            let meta = std::fs::metadata(dir.path().join(name)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (nobody, nobody));
        }
    }
}
