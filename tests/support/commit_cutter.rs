//! A TCP proxy in front of the test database that loses the reply to one `COMMIT`: the
//! transaction commits on the server, and the client sees its connection drop instead of the
//! answer (a connection lost between `COMMIT` and its reply).
//!
//! Include it with `#[path = "support/commit_cutter.rs"] mod commit_cutter;` next to
//! `support/postgres.rs`. Connect through [`CommitCutter::url`] and [`arm`](CommitCutter::arm)
//! it: the next `COMMIT` any client sends through it (sqlx sends it as a simple query) goes to
//! the server, whose answer is read and thrown away, and that client's connection is closed.
//! [`arm_statement`](CommitCutter::arm_statement) does the same to a statement sent outside an
//! explicit transaction (the extended protocol commits it at its `Sync`).
//! Or [`hold`](CommitCutter::hold) the next `COMMIT`: it never reaches the server, and the
//! connection stays open both ways (a network that lost the message and the client that sent
//! it, with no one to tell the server): the server keeps the transaction open, idle, with its
//! locks, until something on its side ends it.
//! [`hold_statement`](CommitCutter::hold_statement) does the same to a statement sent outside
//! an explicit transaction: a black-holed connection, where the server never hears the
//! statement and the client never hears back, and neither side sees the connection close.
#![cfg(feature = "postgres")]
#![allow(dead_code, unreachable_pub)]

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use eventcore::backend::postgres::{Postgres, PostgresConfig, PostgresConfigBuilder};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// The proxy; it runs until the test's runtime ends.
pub struct CommitCutter {
    url: String,
    armed: Arc<AtomicBool>,
    statement: Arc<std::sync::Mutex<Option<String>>>,
    cut: Arc<Notify>,
    holding: Arc<AtomicBool>,
    holding_statement: Arc<std::sync::Mutex<Option<String>>>,
    held: Arc<Notify>,
}

impl CommitCutter {
    /// A store on `schema` (migrated) whose connections go through this proxy: a pool of two,
    /// whose commands wait 5 s at most for a connection, configured further by `bound` (how
    /// the wait for an abandoned statement's answer is bounded).
    pub async fn store(
        &self,
        schema: &str,
        bound: impl FnOnce(PostgresConfigBuilder) -> PostgresConfigBuilder,
    ) -> Postgres {
        let config = PostgresConfig::builder(self.url())
            .schema(schema)
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(5));
        Postgres::connect(bound(config).build().unwrap()).await.unwrap()
    }

    /// A proxy in front of the database of `database_url` (host and port after the `@`).
    pub async fn start(database_url: &str) -> Self {
        let upstream = database_url
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("127.0.0.1:5432")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Plain text, so that the proxy can read the messages.
        let separator = if database_url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{separator}sslmode=disable",
            database_url.replacen(&upstream, &format!("127.0.0.1:{port}"), 1)
        );
        let armed = Arc::new(AtomicBool::new(false));
        let statement = Arc::new(std::sync::Mutex::new(None));
        let cut = Arc::new(Notify::new());
        let holding = Arc::new(AtomicBool::new(false));
        let holding_statement = Arc::new(std::sync::Mutex::new(None));
        let held = Arc::new(Notify::new());
        let (a, c, h, d) =
            (Arc::clone(&armed), Arc::clone(&cut), Arc::clone(&holding), Arc::clone(&held));
        let (st, hs) = (Arc::clone(&statement), Arc::clone(&holding_statement));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let hold = Hold {
                    holding: Arc::clone(&h),
                    statement: Arc::clone(&hs),
                    held: Arc::clone(&d),
                };
                let (a, c, st) = (Arc::clone(&a), Arc::clone(&c), Arc::clone(&st));
                tokio::spawn(async move {
                    let _ =
                        relay(client, &upstream, Armed { commit: a, statement: st }, c, hold).await;
                });
            }
        });
        Self { url, armed, statement, cut, holding, holding_statement, held }
    }

    /// The URL that reaches the database through the proxy.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Loses the reply to the next `COMMIT`.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Loses the reply to the next statement whose text holds `needle`, sent outside an
    /// explicit transaction: it is parsed, run and committed at its `Sync`, whose answer is
    /// thrown away (the statement must be one the connection has not prepared yet, as sqlx
    /// sends the text only when it prepares it).
    pub fn arm_statement(&self, needle: &str) {
        *self.statement.lock().unwrap() = Some(needle.to_owned());
    }

    /// Resolves once a `COMMIT` was committed and its reply lost.
    pub async fn cut(&self) {
        self.cut.notified().await;
    }

    /// Holds the next `COMMIT` back from the server, for good.
    pub fn hold(&self) {
        self.holding.store(true, Ordering::SeqCst);
    }

    /// Holds the next statement whose text holds `needle` back from the server, for good, with
    /// everything its client sends after it; the connection stays open both ways (the
    /// statement must be one the connection has not prepared yet, as for
    /// [`arm_statement`](Self::arm_statement)). Connections opened later are relayed as usual.
    pub fn hold_statement(&self, needle: &str) {
        *self.holding_statement.lock().unwrap() = Some(needle.to_owned());
    }

    /// Resolves once a `COMMIT` or a statement was held back.
    pub async fn held(&self) {
        self.held.notified().await;
    }
}

/// What [`CommitCutter::arm`] and [`CommitCutter::arm_statement`] share with each
/// connection's relay.
struct Armed {
    commit: Arc<AtomicBool>,
    statement: Arc<std::sync::Mutex<Option<String>>>,
}

/// What [`CommitCutter::hold`] shares with each connection's relay.
struct Hold {
    holding: Arc<AtomicBool>,
    statement: Arc<std::sync::Mutex<Option<String>>>,
    held: Arc<Notify>,
}

async fn relay(
    client: TcpStream,
    upstream: &str,
    armed: Armed,
    cut: Arc<Notify>,
    hold: Hold,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Set once the COMMIT to cut went to the server: its answer is swallowed.
    let cutting = Arc::new(AtomicBool::new(false));
    let swallow = Arc::clone(&cutting);
    let back = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if swallow.load(Ordering::SeqCst) {
                // The server answered the COMMIT: it is committed. Hang up on the client.
                break;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    });
    // Client to server, message by message. Startup-phase messages have no type byte.
    let mut startup = true;
    // Set when the statement to cut was parsed (sqlx parses it, then binds and executes it in
    // a second exchange), then when it was executed: the Sync after that commits it.
    let (mut parsed, mut executed) = (false, false);
    loop {
        if startup {
            let len = cr.read_i32().await?;
            let mut body = vec![0u8; usize::try_from(len - 4).unwrap()];
            cr.read_exact(&mut body).await?;
            sw.write_i32(len).await?;
            sw.write_all(&body).await?;
            // SSLRequest / GSSENCRequest: another untyped startup message follows.
            let code = i32::from_be_bytes(body[..4].try_into().unwrap());
            startup = code == 80_877_103 || code == 80_877_104;
            continue;
        }
        let kind = cr.read_u8().await?;
        let len = cr.read_i32().await?;
        let mut body = vec![0u8; usize::try_from(len - 4).unwrap()];
        cr.read_exact(&mut body).await?;
        let is_commit = kind == b'Q' && body.starts_with(b"COMMIT");
        let hold_statement = kind == b'P' && {
            let mut needle = hold.statement.lock().unwrap();
            let text = String::from_utf8_lossy(&body);
            let found = needle.as_ref().is_some_and(|n| text.contains(n.as_str()));
            if found {
                *needle = None;
            }
            found
        };
        if hold_statement || (is_commit && hold.holding.swap(false, Ordering::SeqCst)) {
            // Never sent, and nothing more from this client is: the server's side of the
            // connection stays open (its answers, if any, still reach the client).
            hold.held.notify_one();
            let _ = back.await;
            return Ok(());
        }
        if is_commit && armed.commit.swap(false, Ordering::SeqCst) {
            cutting.store(true, Ordering::SeqCst);
        }
        if kind == b'P' {
            let mut needle = armed.statement.lock().unwrap();
            let text = String::from_utf8_lossy(&body);
            if needle.as_ref().is_some_and(|n| text.contains(n.as_str())) {
                *needle = None;
                parsed = true;
            }
        }
        executed |= parsed && kind == b'E';
        if kind == b'S' && executed {
            cutting.store(true, Ordering::SeqCst);
        }
        sw.write_u8(kind).await?;
        sw.write_i32(len).await?;
        sw.write_all(&body).await?;
        if cutting.load(Ordering::SeqCst) {
            let _ = back.await;
            cut.notify_one();
            return Ok(());
        }
    }
}
