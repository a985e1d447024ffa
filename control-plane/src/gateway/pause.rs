//! A test hook: hold the next handshake between its key check and its registration, the
//! window in which a revocation must still win (`handshake::register` re-checks). Nothing
//! pauses unless a test asked for it.

use std::sync::Mutex;
use tokio::sync::oneshot;

/// The plane's side: where the next handshake waits, if a test armed it.
#[derive(Debug, Default)]
pub(crate) struct PausePoint {
    armed: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

impl PausePoint {
    /// Arms the point for the next handshake that reaches it.
    pub(crate) fn arm(&self) -> Paused {
        let (reached_tx, reached) = oneshot::channel();
        let (resume, resume_rx) = oneshot::channel();
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = Some((reached_tx, resume_rx));
        Paused { reached, resume }
    }

    /// Waits here if armed (once), until the test resumes or drops its handle.
    pub(crate) async fn pass(&self) {
        let armed = self.armed.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((reached, resume)) = armed {
            let _ = reached.send(());
            let _ = resume.await;
        }
    }
}

/// The test's side of an armed pause.
#[derive(Debug)]
pub struct Paused {
    reached: oneshot::Receiver<()>,
    resume: oneshot::Sender<()>,
}

impl Paused {
    /// Waits until a handshake is held at the point (false if it never can be).
    pub async fn reached(&mut self) -> bool {
        (&mut self.reached).await.is_ok()
    }

    /// Lets the held handshake go on.
    pub fn resume(self) {
        let _ = self.resume.send(());
    }
}
