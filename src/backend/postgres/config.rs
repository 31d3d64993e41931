//! Connection settings and the validated schema name.

use std::{fmt, str::FromStr, time::Duration};

use sqlx::postgres::PgConnectOptions;

/// A rejected [`PostgresConfig`] setting.
///
/// ```
/// use eventcore::backend::postgres::{ConfigError, SchemaName};
/// assert!(matches!(SchemaName::try_new("Bad-Name"), Err(ConfigError::InvalidSchemaName { .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The schema name breaks the rule `^[a-z_][a-z0-9_]{0,62}$` (or starts with `pg_`, or is
    /// `information_schema`).
    #[error("invalid PostgreSQL schema name {name:?}: {reason}")]
    InvalidSchemaName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The database URL does not parse, or reads as one whose user name or password holds an
    /// unencoded `/`, `?`, `#` or `@` (which would cut it, and show the rest as the database).
    #[error("invalid PostgreSQL URL: {0}")]
    InvalidUrl(String),
    /// A numeric setting is out of range.
    #[error("invalid setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The setting's name.
        setting: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
}

/// The name of the PostgreSQL schema (namespace) that holds one event store.
///
/// Several stores or tenants can share a database, one schema each. The name must match
/// `^[a-z_][a-z0-9_]{0,62}$`, must not start with `pg_` (reserved by PostgreSQL) and must not
/// be `information_schema` (PostgreSQL's own, which a whole-database `pg_dump` leaves out).
/// Identifiers cannot be bound as query parameters, so this validation is what makes it safe
/// to interpolate the name into SQL text; it is also always double-quoted there.
///
/// ```
/// use eventcore::backend::postgres::SchemaName;
/// assert_eq!(SchemaName::try_new("tenant_42")?.as_str(), "tenant_42");
/// assert!(SchemaName::try_new("x; drop table y").is_err());
/// assert!(SchemaName::try_new("pg_catalog").is_err());
/// # Ok::<(), eventcore::backend::postgres::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SchemaName(String);

impl SchemaName {
    /// The schema used unless configured otherwise.
    pub const DEFAULT: &'static str = "eventcore";

    /// Validates a schema name.
    ///
    /// # Errors
    /// [`ConfigError::InvalidSchemaName`] when the name breaks the rule above.
    ///
    /// ```
    /// # use eventcore::backend::postgres::SchemaName;
    /// assert!(SchemaName::try_new("").is_err());
    /// assert!(SchemaName::try_new("a".repeat(64)).is_err());
    /// ```
    pub fn try_new(name: impl AsRef<str>) -> Result<Self, ConfigError> {
        let name = name.as_ref();
        let reject = |reason| Err(ConfigError::InvalidSchemaName { name: name.to_owned(), reason });
        let mut chars = name.chars();
        match chars.next() {
            None => return reject("must not be empty"),
            Some(c) if !(c.is_ascii_lowercase() || c == '_') => {
                return reject("must start with a lowercase ASCII letter or `_`");
            }
            Some(_) => {}
        }
        if name.len() > 63 {
            return reject("must be at most 63 characters long");
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return reject("may contain only lowercase ASCII letters, digits and `_`");
        }
        if name.starts_with("pg_") {
            return reject("must not start with `pg_` (reserved by PostgreSQL)");
        }
        if name == "information_schema" {
            return reject(
                "must not be `information_schema` (PostgreSQL's own, left out of dumps)",
            );
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    ///
    /// ```
    /// # use eventcore::backend::postgres::SchemaName;
    /// assert_eq!(SchemaName::default().as_str(), "eventcore");
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier. Safe because the name was validated.
    pub(crate) fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl Default for SchemaName {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl fmt::Debug for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SchemaName({:?})", self.0)
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SchemaName {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_new(s)
    }
}

/// How to reach and use a PostgreSQL event store. Build it with [`PostgresConfig::builder`].
///
/// ```
/// use std::time::Duration;
/// use eventcore::backend::postgres::PostgresConfig;
///
/// let config = PostgresConfig::builder("postgres://postgres@127.0.0.1:5432/test")
///     .schema("tenant_a")
///     .max_connections(16)
///     .statement_timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(config.schema().as_str(), "tenant_a");
/// # Ok::<(), eventcore::backend::postgres::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct PostgresConfig {
    pub(crate) connect: PgConnectOptions,
    pub(crate) schema: SchemaName,
    pub(crate) max_connections: u32,
    pub(crate) acquire_timeout: Duration,
    pub(crate) statement_timeout: Option<Duration>,
    /// How long a statement nobody can cancel waits for its answer when `statement_timeout`
    /// is not set (see [`PostgresConfigBuilder::answer_wait`]).
    pub(crate) answer_wait: Duration,
    pub(crate) max_payload: usize,
    /// `None`: [`DEFAULT_MAX_REQUEST`](Self::DEFAULT_MAX_REQUEST), or the store's
    /// `max_payload` when that is higher.
    pub(crate) max_request: Option<usize>,
    pub(crate) read_all_wait: Duration,
    pub(crate) append_batches: usize,
    pub(crate) notify_appends: bool,
    /// The streams held across processes, and on how many connections at most.
    pub(crate) hot: Option<(super::hold::HotStreams, std::num::NonZeroU32)>,
}

impl PostgresConfig {
    /// The limit on an event's size (payload, event type, custom metadata) unless configured
    /// otherwise: 1 MiB.
    pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
    /// The limit on a whole append's size (its events' payloads, event types and custom
    /// metadata) unless configured otherwise: 64 MiB, well below the 1 GiB PostgreSQL takes
    /// in one message (or `max_payload`, when that is set higher: an event the store takes
    /// alone fits in an append).
    pub const DEFAULT_MAX_REQUEST: usize = crate::backend::request::DEFAULT_MAX_REQUEST;
    /// The highest `max_request` accepted: 512 MiB.
    pub const MAX_REQUEST: usize = 512 << 20;
    /// The pool size unless configured otherwise.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
    /// How long to wait for a pooled connection unless configured otherwise.
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long `read_all` waits for older in-flight transactions unless configured otherwise.
    pub const DEFAULT_READ_ALL_WAIT: Duration = Duration::from_secs(2);
    /// How many batches of appends may be in flight at once unless configured otherwise: 0,
    /// every append on its own.
    pub const DEFAULT_APPEND_BATCHES: usize = 0;
    /// How long a statement nobody can cancel waits for its answer, when no
    /// `statement_timeout` is set, unless configured otherwise: 30 s. See
    /// [`PostgresConfigBuilder::answer_wait`].
    ///
    /// ```
    /// # use eventcore::backend::postgres::PostgresConfig;
    /// assert_eq!(PostgresConfig::DEFAULT_ANSWER_WAIT, std::time::Duration::from_secs(30));
    /// ```
    pub const DEFAULT_ANSWER_WAIT: Duration = Duration::from_secs(30);

    /// Starts a configuration for the database at `url` with default settings.
    ///
    /// ```
    /// let builder = eventcore::backend::postgres::PostgresConfig::builder("postgres://localhost/db");
    /// assert!(builder.build().is_ok());
    /// ```
    pub fn builder(url: impl Into<String>) -> PostgresConfigBuilder {
        PostgresConfigBuilder {
            url: url.into(),
            schema: SchemaName::DEFAULT.to_owned(),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: None,
            answer_wait: None,
            max_payload: Self::DEFAULT_MAX_PAYLOAD,
            max_request: None,
            read_all_wait: Self::DEFAULT_READ_ALL_WAIT,
            append_batches: Self::DEFAULT_APPEND_BATCHES,
            notify_appends: true,
            hot_streams: None,
            hot_connections: None,
        }
    }

    /// The schema holding the store.
    ///
    /// ```
    /// let c = eventcore::backend::postgres::PostgresConfig::builder("postgres://localhost/db").build()?;
    /// assert_eq!(c.schema().as_str(), "eventcore");
    /// # Ok::<(), eventcore::backend::postgres::ConfigError>(())
    /// ```
    #[must_use]
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// Where the store connects to, as `host:port/database` (no credentials).
    pub(crate) fn target(&self) -> String {
        format!(
            "{}:{}/{}",
            self.connect.get_host(),
            self.connect.get_port(),
            self.connect.get_database().unwrap_or("(default database)")
        )
    }
}

/// Collects [`PostgresConfig`] settings; [`build`](PostgresConfigBuilder::build) validates them.
///
/// ```
/// let b = eventcore::backend::postgres::PostgresConfig::builder("postgres://localhost/db").schema("Nope");
/// assert!(b.build().is_err());
/// ```
#[derive(Clone)]
#[must_use]
pub struct PostgresConfigBuilder {
    url: String,
    schema: String,
    max_connections: u32,
    acquire_timeout: Duration,
    statement_timeout: Option<Duration>,
    answer_wait: Option<Duration>,
    max_payload: usize,
    /// `None`: the default, or `max_payload` when that is higher.
    max_request: Option<usize>,
    read_all_wait: Duration,
    append_batches: usize,
    notify_appends: bool,
    hot_streams: Option<super::hold::HotStreams>,
    hot_connections: Option<u32>,
}

/// The longest `acquire_timeout` and `read_all_wait` a configuration takes: longer waits are
/// hung requests, and one near `Duration::MAX` overflows the clock arithmetic.
const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

impl PostgresConfigBuilder {
    /// Sets the schema holding the store (default `eventcore`); validated by `build`.
    ///
    /// ```
    /// # use eventcore::backend::postgres::PostgresConfig;
    /// let c = PostgresConfig::builder("postgres://localhost/db").schema("shop").build()?;
    /// assert_eq!(c.schema().as_str(), "shop");
    /// # Ok::<(), eventcore::backend::postgres::ConfigError>(())
    /// ```
    pub fn schema(mut self, name: impl Into<String>) -> Self {
        self.schema = name.into();
        self
    }

    /// Sets the largest number of pooled connections (default 10, at least 1).
    ///
    /// ```
    /// # use eventcore::backend::postgres::PostgresConfig;
    /// assert!(PostgresConfig::builder("postgres://localhost/db").max_connections(0).build().is_err());
    /// ```
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets how long an operation waits for a pooled connection (default 10 s, above zero and
    /// at most 24 hours).
    ///
    /// ```
    /// # use eventcore::backend::postgres::PostgresConfig;
    /// # use std::time::Duration;
    /// let b = PostgresConfig::builder("postgres://localhost/db").acquire_timeout(Duration::from_secs(1));
    /// assert!(b.build().is_ok());
    /// ```
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets PostgreSQL's `statement_timeout` on every pooled connection (default: the server's):
    /// a whole number of milliseconds, at least 1 and below 2^31 (`build` refuses others).
    /// A statement cancelled by it fails with [`StoreError::Timeout`](crate::backend::StoreError::Timeout).
    /// It also bounds how long a statement nobody can cancel (any statement of the store's
    /// whose future was dropped while it ran, by a request timeout say; a group-commit batch)
    /// keeps its connection waiting for the answer: twice this, plus a second, after which the
    /// connection is taken for lost (black-holed by the network) and closed, and a batch's
    /// requests fail as over a dropped connection; without it,
    /// [`answer_wait`](Self::answer_wait) (default 30 s).
    ///
    /// ```
    /// # use eventcore::backend::postgres::PostgresConfig;
    /// # use std::time::Duration;
    /// let b = PostgresConfig::builder("postgres://localhost/db").statement_timeout(Duration::from_millis(500));
    /// assert!(b.build().is_ok());
    /// ```
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = Some(timeout);
        self
    }

    /// Sets how long a statement nobody can cancel keeps its connection waiting for the
    /// answer, for a store without a [`statement_timeout`](Self::statement_timeout) (default
    /// [`PostgresConfig::DEFAULT_ANSWER_WAIT`], 30 s; above zero, at most 24 hours). Such a
    /// statement is one of the store's whose future was dropped while it ran (a request
    /// timeout, an aborted task), a hot stream's give-back, a notification, or a group-commit
    /// batch. Past this wait the connection is taken for lost (black-holed by the network: the
    /// statement or its answer lost, the socket still open) and closed, which gives its place
    /// in the pool back, and a batch's requests fail as over a dropped connection (it may have
    /// committed). Keep it above the longest the server may take to answer one of the store's
    /// statements (the server's own `statement_timeout`, if it sets one): a batch that answers
    /// later is taken for lost although it committed.
    ///
    /// With a `statement_timeout`, the wait is twice it plus a second, and `build` refuses this
    /// setting, which would have no effect.
    ///
    /// ```
    /// # use eventcore::backend::postgres::{ConfigError, PostgresConfig};
    /// # use std::time::Duration;
    /// let b = PostgresConfig::builder("postgres://localhost/db").answer_wait(Duration::from_secs(5));
    /// assert!(b.build().is_ok());
    /// let zero = PostgresConfig::builder("postgres://localhost/db").answer_wait(Duration::ZERO);
    /// assert!(matches!(zero.build(), Err(ConfigError::InvalidSetting { setting: "answer_wait", .. })));
    /// ```
    pub fn answer_wait(mut self, wait: Duration) -> Self {
        self.answer_wait = Some(wait);
        self
    }

    /// Sets the largest accepted event in bytes: its payload, event type and custom metadata
    /// (as JSON text) together (default 1 MiB, at least 1).
    ///
    /// ```
    /// # use eventcore::backend::postgres::PostgresConfig;
    /// assert!(PostgresConfig::builder("postgres://localhost/db").max_payload(4096).build().is_ok());
    /// ```
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Sets the largest accepted append in bytes: the payloads, event types and custom
    /// metadata (as JSON text) of all its events together (default 64 MiB, or `max_payload`
    /// when that is higher; when set, at least `max_payload`, at most 512 MiB: PostgreSQL
    /// takes at most 1 GiB in one message, and text is sent escaped). Larger requests fail whole with
    /// [`StoreError::RequestTooLarge`](crate::backend::StoreError::RequestTooLarge), a final
    /// error, before anything is sent.
    ///
    /// ```
    /// # use eventcore::backend::postgres::PostgresConfig;
    /// let config = PostgresConfig::builder("postgres://localhost/db").max_request(8 << 20);
    /// assert!(config.build().is_ok());
    /// let below = PostgresConfig::builder("postgres://localhost/db").max_payload(4096).max_request(1024);
    /// assert!(below.build().is_err());
    /// let above = PostgresConfig::builder("postgres://localhost/db").max_request(1 << 30);
    /// assert!(above.build().unwrap_err().to_string().contains("max_request"));
    /// ```
    pub fn max_request(mut self, bytes: usize) -> Self {
        self.max_request = Some(bytes);
        self
    }

    /// Sets how long [`read_all`](crate::backend::Backend::read_all) waits for older transactions
    /// still in flight before it returns a shorter page (default 2 s, at most 24 hours). See the
    /// module docs.
    ///
    /// ```
    /// # use eventcore::backend::postgres::PostgresConfig;
    /// # use std::time::Duration;
    /// let b = PostgresConfig::builder("postgres://localhost/db").read_all_wait(Duration::ZERO);
    /// assert!(b.build().is_ok());
    /// ```
    pub fn read_all_wait(mut self, wait: Duration) -> Self {
        self.read_all_wait = wait;
        self
    }

    /// Turns on group commit: at most `in_flight` batches of appends at once (default 0: off,
    /// every append on its own).
    ///
    /// Appends that arrive while that many batches are in flight wait, and go to the database
    /// together as soon as one returns: one statement, one transaction and one commit for all
    /// of them, each still checked, written and answered as if it were alone. An append that
    /// finds nothing in flight goes at once, alone. This pays when more appends are in flight
    /// than the database can commit one by one (many concurrent commands over few connections,
    /// or a server bound by commits); measure before turning it on (see the book's PostgreSQL
    /// chapter).
    ///
    /// ```
    /// # use eventcore::backend::postgres::PostgresConfig;
    /// let b = PostgresConfig::builder("postgres://localhost/db").append_batches(2);
    /// assert!(b.build().is_ok());
    /// ```
    pub fn append_batches(mut self, in_flight: usize) -> Self {
        self.append_batches = in_flight;
        self
    }

    /// Whether the store wakes live readers in other processes after its appends (default
    /// yes): after an append commits, a background task sends one `NOTIFY` on the schema's
    /// channel, outside the append's transaction (a `NOTIFY` inside it would serialise every
    /// appending commit of the cluster); appends that come while one is on its way share the
    /// next. Readers in this process are woken at once either way. Off, other processes'
    /// readers find new events by polling.
    ///
    /// ```
    /// # use eventcore::backend::postgres::PostgresConfig;
    /// let b = PostgresConfig::builder("postgres://localhost/db").notify_appends(false);
    /// assert!(b.build().is_ok());
    /// ```
    pub fn notify_appends(mut self, notify: bool) -> Self {
        self.notify_appends = notify;
        self
    }

    /// Marks streams as hot: a command over one of them holds it across processes from before
    /// it reads until its append has answered, so that commands in several processes over
    /// one hot stream wait for each other instead of all deciding on the same version and
    /// all but one failing (and retrying) at the append. Off by default: holding costs a
    /// round trip to take and one to give back, worth it only where contention is the rule.
    ///
    /// Within one process, commands over the same streams take turns whatever this says (see
    /// [`StreamQueue`](crate::backend::StreamQueue)); this is for contention between
    /// processes. Holds are advisory locks of a class of their own, on connections of their
    /// own (at most [`hot_connections`](Self::hot_connections)); a command that is cancelled
    /// or times out gives its holds back. Streams found by discovery are never held. The
    /// append still checks every stream read: holding only saves the retries.
    ///
    /// ```
    /// # use eventcore::backend::postgres::PostgresConfig;
    /// let config = PostgresConfig::builder("postgres://localhost/db")
    ///     .hot_streams(|id| id.as_str().starts_with("counter-"))
    ///     .build()?;
    /// # let _ = config;
    /// # Ok::<(), eventcore::backend::postgres::ConfigError>(())
    /// ```
    pub fn hot_streams(
        mut self,
        is_hot: impl Fn(&crate::StreamId) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.hot_streams = Some(super::hold::HotStreams::new(is_hot));
        self
    }

    /// How many connections hold hot streams at most, one per command holding streams
    /// (default: [`max_connections`](Self::max_connections)). They are opened as needed, in
    /// a pool of their own, so that commands holding streams never take the connections
    /// their reads and appends need. Without [`hot_streams`](Self::hot_streams) it would do
    /// nothing: [`build`](Self::build) refuses it then, and a zero.
    ///
    /// ```
    /// # use eventcore::backend::postgres::PostgresConfig;
    /// let b = PostgresConfig::builder("postgres://localhost/db")
    ///     .hot_streams(|id| id.as_str() == "counter")
    ///     .hot_connections(4);
    /// assert!(b.build().is_ok());
    /// ```
    pub fn hot_connections(mut self, n: u32) -> Self {
        self.hot_connections = Some(n);
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first invalid setting.
    ///
    /// ```
    /// # use eventcore::backend::postgres::PostgresConfig;
    /// assert!(PostgresConfig::builder("mysql://nope").build().is_err());
    /// ```
    pub fn build(self) -> Result<PostgresConfig, ConfigError> {
        let schema = SchemaName::try_new(&self.schema)?;
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(ConfigError::InvalidUrl(
                "must start with `postgres://` or `postgresql://`".to_owned(),
            ));
        }
        if cut_userinfo(&self.url) {
            // Nothing of the URL is echoed: the text after the cut is likely a password.
            return Err(ConfigError::InvalidUrl(
                "the user name or password holds an unencoded `/`, `?`, `#` or `@` (write them \
                 `%2F`, `%3F`, `%23`, `%40`), or the URL ends with a `#` fragment"
                    .to_owned(),
            ));
        }
        let connect = PgConnectOptions::from_str(&self.url)
            .map_err(|e| ConfigError::InvalidUrl(e.to_string()))?;
        if self.max_connections == 0 {
            return Err(ConfigError::InvalidSetting {
                setting: "max_connections",
                reason: "must be at least 1",
            });
        }
        if self.acquire_timeout.is_zero() {
            return Err(ConfigError::InvalidSetting {
                setting: "acquire_timeout",
                reason: "must be above zero",
            });
        }
        // sqlx adds it to the current instant, which overflows (and panics) near `Duration::MAX`.
        if self.acquire_timeout > MAX_WAIT {
            return Err(ConfigError::InvalidSetting {
                setting: "acquire_timeout",
                reason: "must be at most 24 hours",
            });
        }
        if self.read_all_wait > MAX_WAIT {
            return Err(ConfigError::InvalidSetting {
                setting: "read_all_wait",
                reason: "must be at most 24 hours",
            });
        }
        if self.statement_timeout.is_some_and(|t| t.as_millis() == 0) {
            return Err(ConfigError::InvalidSetting {
                setting: "statement_timeout",
                reason: "must be at least one millisecond (zero would disable it)",
            });
        }
        // PostgreSQL counts it in whole milliseconds: `1.5 ms` would silently become `1ms`.
        if self.statement_timeout.is_some_and(|t| t.subsec_nanos() % 1_000_000 != 0) {
            return Err(ConfigError::InvalidSetting {
                setting: "statement_timeout",
                reason: "must be a whole number of milliseconds (PostgreSQL counts it so)",
            });
        }
        if self.statement_timeout.is_some_and(|t| t.as_millis() > i32::MAX as u128) {
            return Err(ConfigError::InvalidSetting {
                setting: "statement_timeout",
                reason: "must be below 2^31 milliseconds",
            });
        }
        if self.answer_wait.is_some_and(|w| w.is_zero()) {
            return Err(ConfigError::InvalidSetting {
                setting: "answer_wait",
                reason: "must be above zero (every group-commit batch would be taken for lost)",
            });
        }
        if self.answer_wait.is_some_and(|w| w > MAX_WAIT) {
            return Err(ConfigError::InvalidSetting {
                setting: "answer_wait",
                reason: "must be at most 24 hours",
            });
        }
        if self.answer_wait.is_some() && self.statement_timeout.is_some() {
            return Err(ConfigError::InvalidSetting {
                setting: "answer_wait",
                reason: "has no effect with `statement_timeout`, which makes the wait twice \
                         the timeout plus a second: set one of the two",
            });
        }
        if self.max_payload == 0 {
            return Err(ConfigError::InvalidSetting {
                setting: "max_payload",
                reason: "must be at least 1 byte",
            });
        }
        // Unset, it follows `max_payload` above the default, as large as that is: a
        // configuration that takes events above it builds as it did before appends had a
        // limit of their own.
        let max_request = crate::backend::request::max_request(self.max_request, self.max_payload);
        if max_request < self.max_payload {
            return Err(ConfigError::InvalidSetting {
                setting: "max_request",
                reason: "must be at least `max_payload`: an event the store takes on its own \
                         must fit in an append",
            });
        }
        if self.max_request.is_some_and(|set| set > PostgresConfig::MAX_REQUEST) {
            return Err(ConfigError::InvalidSetting {
                setting: "max_request",
                reason: "must be at most 512 MiB: PostgreSQL takes at most 1 GiB in one \
                         message, and the events' text is sent escaped",
            });
        }
        let hot_connections = match self.hot_connections {
            Some(n) => std::num::NonZeroU32::new(n).ok_or(ConfigError::InvalidSetting {
                setting: "hot_connections",
                reason: "must be at least 1",
            })?,
            None => std::num::NonZeroU32::new(self.max_connections).ok_or(
                ConfigError::InvalidSetting {
                    setting: "max_connections",
                    reason: "must be at least 1",
                },
            )?,
        };
        if self.hot_connections.is_some() && self.hot_streams.is_none() {
            return Err(ConfigError::InvalidSetting {
                setting: "hot_connections",
                reason: "has no effect without `hot_streams`: say which streams are hot, or \
                         leave the number of their connections out",
            });
        }
        let hot = self.hot_streams.map(|streams| (streams, hot_connections));
        Ok(PostgresConfig {
            hot,
            connect,
            schema,
            max_connections: self.max_connections,
            acquire_timeout: self.acquire_timeout,
            statement_timeout: self.statement_timeout,
            answer_wait: self.answer_wait.unwrap_or(PostgresConfig::DEFAULT_ANSWER_WAIT),
            max_payload: self.max_payload,
            max_request: self.max_request,
            read_all_wait: self.read_all_wait,
            append_batches: self.append_batches,
            notify_appends: self.notify_appends,
        })
    }
}

/// Whether `url` reads as one whose user name or password was cut by an unencoded `/`, `?`,
/// `#` or `@` in it: the authority ends at the first `/`, `?` or `#`, and the rest of the
/// password would be read as the database (shown in every connection error and in `Debug`),
/// as a parameter's name, or as a fragment (silently dropped). So: an `@` in the database part
/// or in a parameter's name, where none belongs (a database name holding one is written
/// `%40`), or a `#` anywhere (a fragment means nothing to PostgreSQL).
fn cut_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let after_authority = rest.find(['/', '?', '#']).map_or("", |at| &rest[at..]);
    if after_authority.contains('#') {
        return true;
    }
    let (path, query) = after_authority.split_once('?').unwrap_or((after_authority, ""));
    path.contains('@')
        || query.split('&').any(|pair| pair.split('=').next().is_some_and(|k| k.contains('@')))
}

// Hand-written so that passwords in the URL never reach logs: sqlx's `PgConnectOptions` prints
// its password, and the builder holds the URL as given.
impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("target", &self.target())
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("answer_wait", &self.answer_wait)
            .field("max_payload", &self.max_payload)
            .field("max_request", &self.max_request)
            .field("read_all_wait", &self.read_all_wait)
            .field("append_batches", &self.append_batches)
            .field("notify_appends", &self.notify_appends)
            .field("hot_connections", &self.hot.as_ref().map(|(_, n)| n))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PostgresConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = match PgConnectOptions::from_str(&self.url) {
            Ok(o) => format!("{}:{}", o.get_host(), o.get_port()),
            Err(_) => "(unparsed)".to_owned(),
        };
        f.debug_struct("PostgresConfigBuilder")
            .field("server", &url)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration that takes events larger than the default limit on an append, and sets
    /// no such limit, builds as it did before appends had one: the limit follows `max_payload`.
    #[test]
    fn a_max_payload_above_the_default_max_request_builds_without_a_max_request() {
        let large = PostgresConfig::DEFAULT_MAX_REQUEST * 2;
        let built = PostgresConfig::builder("postgres://localhost/db").max_payload(large).build();
        assert!(built.is_ok(), "{built:?}");
    }

    #[test]
    fn answer_wait_is_above_zero_at_most_a_day_and_only_without_a_statement_timeout() {
        let builder = || PostgresConfig::builder("postgres://localhost/db");
        let refused = |b: PostgresConfigBuilder| {
            matches!(b.build(), Err(ConfigError::InvalidSetting { setting: "answer_wait", .. }))
        };
        assert!(refused(builder().answer_wait(Duration::ZERO)));
        assert!(refused(builder().answer_wait(MAX_WAIT + Duration::from_secs(1))));
        assert!(refused(builder().answer_wait(Duration::MAX)));
        let both = builder().statement_timeout(Duration::from_secs(1));
        assert!(refused(both.answer_wait(Duration::from_secs(5))));
        let config = builder().answer_wait(Duration::from_millis(1)).build().unwrap();
        assert_eq!(config.answer_wait, Duration::from_millis(1));
        assert_eq!(builder().answer_wait(MAX_WAIT).build().unwrap().answer_wait, MAX_WAIT);
        assert_eq!(builder().build().unwrap().answer_wait, PostgresConfig::DEFAULT_ANSWER_WAIT);
    }

    #[test]
    fn schema_names_follow_the_rule() {
        for ok in ["a", "_", "a_1", "eventcore", &"a".repeat(63)] {
            assert!(SchemaName::try_new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "A", "a-b", "a b", "\"a\"", "é", &"a".repeat(64), "pg_x", "a;b"] {
            assert!(SchemaName::try_new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_never_printed() {
        let b = PostgresConfig::builder("postgres://u:secret@db.example:6543/app");
        assert!(!format!("{b:?}").contains("secret"));
        let c = b.build().unwrap();
        assert_eq!(c.target(), "db.example:6543/app");
        assert!(!format!("{c:?}").contains("secret"), "{c:?}");
    }

    /// A password holding an unencoded `/`, `?` or `#` ends the URL's authority early: the
    /// rest of it would be read as the database, a parameter or a fragment, and the database
    /// is shown in every connection error and in `Debug`. Such a URL is refused, without
    /// echoing it; URLs with an `@` where one may be (an encoded password, a parameter's
    /// value) are not.
    #[test]
    fn a_password_cut_by_an_unencoded_delimiter_is_never_printed() {
        for url in [
            "postgres://app:/s3cret@db.example:5432/shop",
            "postgres://app:1234/s3cret@db.example:5432/shop",
            "postgres://app:1234#s3cret@db.example:5432/shop",
            "postgres://app:1234?s3cret@db.example:5432/shop",
        ] {
            match PostgresConfig::builder(url).build() {
                Ok(c) => panic!("{url} accepted: {c:?}, target {}", c.target()),
                Err(e) => assert!(!e.to_string().contains("s3cret"), "{e}"),
            }
        }
        for url in [
            "postgres://app:%2Fs3cret%40@db.example:5432/shop",
            "postgres://app@db.example/shop?application_name=me@host",
            "postgresql://db.example/sh%40p",
        ] {
            assert!(PostgresConfig::builder(url).build().is_ok(), "{url}");
        }
    }
}
