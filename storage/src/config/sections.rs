//! Validation of the config's sections other than tables: auth, limits, the
//! log, queries and storage. Each error names the field's dotted path and line.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::raw::*;
use super::*;

pub(super) struct Ctx<'a> {
    pub(super) src: &'a str,
}

impl Ctx<'_> {
    pub(super) fn line(&self, span: &Range<usize>) -> usize {
        self.src[..span.start.min(self.src.len())].bytes().filter(|b| *b == b'\n').count() + 1
    }

    pub(super) fn err(&self, path: impl Into<String>, span: &Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError { path: path.into(), line: Some(self.line(span)), message: message.into() }
    }

    pub(super) fn duration(&self, path: &str, value: &Spanned<String>) -> Result<Duration, ConfigError> {
        parse_duration(value.get_ref()).map_err(|m| self.err(path, &value.span(), m))
    }
}

pub(super) fn validate_limits(ctx: &Ctx, raw: RawLimits) -> Result<LimitsConfig, ConfigError> {
    let mut l = LimitsConfig::default();
    for (value, slot, name) in [
        (raw.max_body_bytes, &mut l.max_body_bytes, "max_body_bytes"),
        (raw.max_records_per_request, &mut l.max_records_per_request, "max_records_per_request"),
        (raw.max_live_connections, &mut l.max_live_connections, "max_live_connections"),
        (raw.max_pg_connections, &mut l.max_pg_connections, "max_pg_connections"),
        (raw.max_tiles_per_connection, &mut l.max_tiles_per_connection, "max_tiles_per_connection"),
        (raw.max_live_tiles, &mut l.max_live_tiles, "max_live_tiles"),
        (raw.max_tile_bytes, &mut l.max_tile_bytes, "max_tile_bytes"),
        (raw.max_live_queued_bytes, &mut l.max_live_queued_bytes, "max_live_queued_bytes"),
        (raw.max_connections, &mut l.max_connections, "max_connections"),
    ] {
        if let Some(v) = value {
            if *v.get_ref() == 0 {
                return Err(ctx.err(format!("limits.{name}"), &v.span(), "must be at least 1"));
            }
            *slot = *v.get_ref();
        }
    }
    for (value, slot, name) in [
        (&raw.live_send_timeout, &mut l.live_send_timeout, "live_send_timeout"),
        (&raw.pg_send_timeout, &mut l.pg_send_timeout, "pg_send_timeout"),
        (&raw.header_timeout, &mut l.header_timeout, "header_timeout"),
        (&raw.body_timeout, &mut l.body_timeout, "body_timeout"),
    ] {
        if let Some(v) = value {
            let path = format!("limits.{name}");
            *slot = ctx.duration(&path, v)?;
            if slot.is_zero() {
                return Err(ctx.err(path, &v.span(), "must be longer than zero"));
            }
        }
    }
    Ok(l)
}

pub(super) fn validate_auth(ctx: &Ctx, raw: RawAuth) -> Result<AuthConfig, ConfigError> {
    let mut tokens = Vec::new();
    let mut names = HashSet::new();
    for (i, t) in raw.tokens.into_iter().enumerate() {
        let p = format!("auth.tokens[{i}]");
        let span = t.span();
        let t = t.into_inner();
        let name = t.name.get_ref().clone();
        if !names.insert(name.clone()) {
            return Err(ctx.err(format!("{p}.name"), &t.name.span(), format!("token name `{name}` is used twice")));
        }
        let secret = match (&t.token, &t.token_env) {
            (Some(s), None) => s.get_ref().clone(),
            (None, Some(var)) => std::env::var(var.get_ref()).map_err(|_| {
                ctx.err(
                    format!("{p}.token_env"),
                    &var.span(),
                    format!("environment variable `{}` is not set", var.get_ref()),
                )
            })?,
            _ => return Err(ctx.err(p, &span, "give exactly one of `token` and `token_env`")),
        };
        if secret.len() < MIN_TOKEN_BYTES {
            return Err(ctx.err(
                format!("{p}.token"),
                &span,
                format!("token `{name}` is shorter than {MIN_TOKEN_BYTES} bytes; use a long random secret"),
            ));
        }
        if t.scopes.get_ref().is_empty() {
            return Err(ctx.err(
                format!("{p}.scopes"),
                &t.scopes.span(),
                "give at least one scope: query, ingest or admin",
            ));
        }
        let mut scopes = t.scopes.into_inner();
        scopes.sort();
        scopes.dedup();
        tokens.push(TokenConfig { name, secret, scopes });
    }
    Ok(AuthConfig { tokens })
}

pub(super) fn validate_log(ctx: &Ctx, raw: RawLog) -> Result<LogConfig, ConfigError> {
    let mut log = LogConfig::default();
    if let Some(b) = raw.segment_bytes {
        if *b.get_ref() < 4096 {
            return Err(ctx.err("log.segment_bytes", &b.span(), "must be at least 4096"));
        }
        log.segment_bytes = *b.get_ref();
    }
    let interval = match &raw.fsync_interval {
        Some(v) => ctx.duration("log.fsync_interval", v)?,
        None => Duration::from_millis(100),
    };
    if let Some(f) = raw.fsync {
        log.fsync = match f.get_ref().as_str() {
            "always" => FsyncPolicy::Always,
            "interval" => FsyncPolicy::Interval(interval),
            "never" => FsyncPolicy::Never,
            other => {
                return Err(ctx.err(
                    "log.fsync",
                    &f.span(),
                    format!("unknown fsync policy `{other}` (use always, interval or never)"),
                ));
            }
        };
    } else {
        log.fsync = FsyncPolicy::Interval(interval);
    }
    log.retention.max_bytes = raw.retention_bytes;
    if let Some(a) = &raw.retention_age {
        log.retention.max_age = Some(ctx.duration("log.retention_age", a)?);
    }
    Ok(log)
}

pub(super) fn validate_query(ctx: &Ctx, raw: RawQuery) -> Result<QueryConfig, ConfigError> {
    let mut q = QueryConfig::default();
    if let Some(t) = &raw.timeout {
        q.timeout = ctx.duration("query.timeout", t)?;
        if q.timeout.is_zero() {
            return Err(ctx.err("query.timeout", &t.span(), "must be longer than zero"));
        }
    }
    if let Some(m) = raw.memory_limit_bytes {
        if *m.get_ref() < (1 << 20) {
            return Err(ctx.err("query.memory_limit_bytes", &m.span(), "must be at least 1048576 (1 MiB)"));
        }
        q.memory_limit_bytes = *m.get_ref() as usize;
    }
    match raw.total_memory_bytes {
        Some(m) if (*m.get_ref() as usize) < q.memory_limit_bytes => {
            return Err(ctx.err(
                "query.total_memory_bytes",
                &m.span(),
                format!("must be at least query.memory_limit_bytes ({})", q.memory_limit_bytes),
            ));
        }
        Some(m) => q.total_memory_bytes = *m.get_ref() as usize,
        // The default holds four queries at their limit.
        None => q.total_memory_bytes = q.total_memory_bytes.max(4 * q.memory_limit_bytes),
    }
    for (value, slot, name, min) in [
        (raw.max_concurrent, &mut q.max_concurrent, "max_concurrent", 1),
        (raw.max_queued, &mut q.max_queued, "max_queued", 0),
        (raw.max_sql_bytes, &mut q.max_sql_bytes, "max_sql_bytes", 1),
        (raw.max_result_rows, &mut q.max_result_rows, "max_result_rows", 1),
        (raw.max_result_bytes, &mut q.max_result_bytes, "max_result_bytes", 1),
    ] {
        if let Some(v) = value {
            if *v.get_ref() < min {
                return Err(ctx.err(format!("query.{name}"), &v.span(), format!("must be at least {min}")));
            }
            *slot = *v.get_ref();
        }
    }
    Ok(q)
}

pub(super) fn validate_storage(ctx: &Ctx, raw: RawStorage) -> Result<StorageConfig, ConfigError> {
    let mut s = StorageConfig::default();
    if let Some(url) = &raw.url {
        let u = url.get_ref();
        let ok = u.strip_prefix("s3://").is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
            || u.strip_prefix("file://").is_some_and(|rest| rest.starts_with('/'));
        if !ok {
            return Err(ctx.err(
                "storage.url",
                &url.span(),
                format!("`{u}` is not s3://bucket/prefix or file:///absolute/path"),
            ));
        }
        s.url = Some(u.clone());
    }
    if let Some(e) = &raw.endpoint {
        let v = e.get_ref();
        if !(v.starts_with("http://") || v.starts_with("https://")) {
            return Err(ctx.err("storage.endpoint", &e.span(), format!("`{v}` must start with http:// or https://")));
        }
        s.endpoint = Some(v.clone());
    }
    s.region = raw.region;
    s.access_key_id = raw.access_key_id;
    s.secret_access_key = match (raw.secret_access_key, raw.secret_access_key_env) {
        (Some(v), None) => Some(v),
        (None, Some(var)) => Some(std::env::var(var.get_ref()).map_err(|_| {
            ctx.err(
                "storage.secret_access_key_env",
                &var.span(),
                format!("environment variable `{}` is not set", var.get_ref()),
            )
        })?),
        (None, None) => None,
        (Some(_), Some(var)) => {
            return Err(ctx.err(
                "storage",
                &var.span(),
                "give at most one of secret_access_key and secret_access_key_env",
            ));
        }
    };
    if let Some(t) = &raw.request_timeout {
        s.request_timeout = ctx.duration("storage.request_timeout", t)?;
        if s.request_timeout.is_zero() {
            return Err(ctx.err("storage.request_timeout", &t.span(), "must be longer than zero"));
        }
    }
    if let Some(n) = raw.compact_min_segments {
        if *n.get_ref() < 2 {
            return Err(ctx.err("storage.compact_min_segments", &n.span(), "must be at least 2"));
        }
        s.compact_min_segments = *n.get_ref();
    }
    if let Some(t) = &raw.catalog_poll {
        s.catalog_poll = ctx.duration("storage.catalog_poll", t)?;
        if s.catalog_poll.is_zero() {
            return Err(ctx.err("storage.catalog_poll", &t.span(), "must be longer than zero"));
        }
    }
    Ok(s)
}
