//! Validation of one `[[tables]]` entry: fields, event time, key, durations,
//! dedup, rollups, session windows and the Kafka and Avro sources.

use std::collections::HashSet;
use std::time::Duration;

use toml::Spanned;

use super::raw::*;
use super::sections::Ctx;
use super::*;

/// Validates one table: `tables[i]` of the config (`p` is `tables[i].`), or a
/// definition sent to the table API (`p` is empty: paths start at the table).
pub(super) fn validate_table(ctx: &Ctx, p: &str, raw: RawTable) -> Result<TableConfig, ConfigError> {
    let name = raw.name.get_ref().clone();
    if !is_identifier(&name) {
        return Err(ctx.err(
            format!("{p}name"),
            &raw.name.span(),
            format!("`{name}` is not a valid table name: use lowercase letters, digits and _, starting with a letter"),
        ));
    }
    let partitions = match &raw.partitions {
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > 1024 => {
            return Err(ctx.err(format!("{p}partitions"), &n.span(), "must be between 1 and 1024"));
        }
        Some(n) => *n.get_ref(),
        None => 1,
    };

    let mut seen = HashSet::new();
    let mut read = Vec::new();
    let dimensions = fields(ctx, p, &mut seen, &mut read, raw.dimensions, "dimensions", false)?;
    let metrics = fields(ctx, p, &mut seen, &mut read, raw.metrics, "metrics", true)?;
    let has = |n: &str| dimensions.iter().chain(metrics.iter()).find(|f| f.name == n).cloned();
    let (time, time_span) = time(ctx, p, raw.time, &has, &mut read)?;
    let key = key(ctx, p, raw.key, &has)?;
    let filter = match &raw.filter {
        Some(f) => Some(expression(ctx, &format!("{p}filter"), f)?),
        None => None,
    };

    let dur = |v: &Option<Spanned<String>>, what: &str, default: Duration| -> Result<i64, ConfigError> {
        match v {
            Some(v) => Ok(ctx.duration(&format!("{p}{what}"), v)?.as_millis() as i64),
            None => Ok(default.as_millis() as i64),
        }
    };
    let allowed_lateness_ms = dur(&raw.allowed_lateness, "allowed_lateness", Duration::from_secs(300))?;
    let max_future_ms = dur(&raw.max_future, "max_future", Duration::from_secs(300))?;
    let segment_granularity_ms = dur(&raw.segment_granularity, "segment_granularity", Duration::from_secs(3600))?;
    let idle_timeout_ms = dur(&raw.idle_timeout, "idle_timeout", Duration::from_secs(30))?;
    if segment_granularity_ms <= 0
        || 86_400_000 % segment_granularity_ms != 0 && segment_granularity_ms % 86_400_000 != 0
    {
        let s = raw.segment_granularity.as_ref().map(|s| s.span()).unwrap_or(time_span.clone());
        return Err(ctx.err(
            format!("{p}segment_granularity"),
            &s,
            "must divide a day evenly (like 1m, 15m, 1h) or be whole days",
        ));
    }
    let hot_budget_bytes = match raw.hot_budget_bytes {
        Some(b) if *b.get_ref() < (1 << 20) => {
            return Err(ctx.err(format!("{p}hot_budget_bytes"), &b.span(), "must be at least 1048576 (1 MiB)"));
        }
        Some(b) => *b.get_ref(),
        None => 1 << 30,
    };

    let retention_ms = match &raw.retention {
        Some(r) => {
            let ms = ctx.duration(&format!("{p}retention"), r)?.as_millis() as i64;
            if ms < segment_granularity_ms {
                return Err(ctx.err(
                    format!("{p}retention"),
                    &r.span(),
                    "must be at least the table's segment_granularity",
                ));
            }
            Some(ms)
        }
        None => None,
    };

    let dedup = dedup(ctx, p, &name, raw.dedup, &dimensions)?;
    // Rollups and session windows share one namespace.
    let mut rollup_names = HashSet::new();
    let rollups = rollups(ctx, p, &name, raw.rollups, segment_granularity_ms, &dimensions, &has, &mut rollup_names)?;
    let sessions = sessions(ctx, p, &name, raw.sessions, &dimensions, &has, &mut rollup_names)?;
    let kafka = kafka(ctx, p, &name, raw.kafka, raw.partitions.is_none())?;
    if kafka.as_ref().is_some_and(|k| k.rebalance) && (!sessions.is_empty() || dedup.is_some()) {
        return Err(ctx.err(
            format!("{p}kafka.rebalance"),
            &raw.name.span(),
            "a table whose partitions move between processes cannot have session windows or dedup yet (their state would have to move too)",
        ));
    }
    let avro = avro(ctx, p, raw.avro, kafka.is_some())?;
    let upsert = match &raw.upsert {
        Some(u) if *u.get_ref() => {
            let refuse = |what: &str| Err(ctx.err(format!("{p}upsert"), &u.span(), what.to_string()));
            if key.is_none() {
                return refuse(
                    "an upsert table needs `key`: its primary key (records of one key share a partition, so their log offsets order them)",
                );
            }
            if !rollups.is_empty() || !sessions.is_empty() {
                return refuse(
                    "an upsert table cannot have rollups or session windows: they would count every version of a key, not the latest; aggregate the table itself with GROUP BY",
                );
            }
            let log_column = |f: &&FieldConfig| crate::hot::LOG_COLUMNS.contains(&f.name.as_str());
            if let Some(f) = dimensions.iter().chain(&metrics).find(log_column) {
                return refuse(&format!(
                    "an upsert table keeps `_partition` and `_offset` with each version; rename the field `{}`",
                    f.name
                ));
            }
            true
        }
        _ => false,
    };

    Ok(TableConfig {
        avro,
        kafka,
        name,
        partitions,
        key,
        time,
        dimensions,
        metrics,
        allowed_lateness_ms,
        max_future_ms,
        segment_granularity_ms,
        idle_timeout_ms,
        hot_budget_bytes,
        retention_ms,
        dedup,
        unknown_fields: raw.unknown_fields,
        rollups,
        sessions,
        filter,
        upsert,
    })
}

/// The dimensions or the metrics (`what`) of a table; `seen` holds the field
/// names already declared.
fn fields(
    ctx: &Ctx,
    p: &str,
    seen: &mut HashSet<String>,
    read: &mut Vec<(String, JsonPath)>,
    list: Vec<Spanned<RawField>>,
    what: &str,
    metric: bool,
) -> Result<Vec<FieldConfig>, ConfigError> {
    let mut out = Vec::new();
    for (j, f) in list.into_iter().enumerate() {
        let fp = format!("{p}{what}[{j}]");
        let span = f.span();
        let f = f.into_inner();
        let fname = f.name.get_ref().clone();
        if !is_identifier(&fname) {
            return Err(ctx.err(format!("{fp}.name"), &f.name.span(), format!("`{fname}` is not a valid field name")));
        }
        if !seen.insert(fname.clone()) {
            return Err(ctx.err(format!("{fp}.name"), &f.name.span(), format!("field `{fname}` is declared twice")));
        }
        if metric && !matches!(f.ty, FieldType::Int64 | FieldType::Float64) {
            return Err(ctx.err(fp, &span, format!("metric `{fname}` must be int64 or float64, not {}", f.ty)));
        }
        let path = match &f.path {
            Some(text) => {
                Some(JsonPath::parse(text.get_ref()).map_err(|m| ctx.err(format!("{fp}.path"), &text.span(), m))?)
            }
            None => None,
        };
        let expr = match f.expr {
            Some(e) if path.is_some() => {
                return Err(ctx.err(
                    format!("{fp}.expr"),
                    &e.span(),
                    "a field is either read from the record (`path`) or derived (`expr`), not both",
                ));
            }
            Some(e) => Some(expression(ctx, &format!("{fp}.expr"), &e)?),
            None => None,
        };
        if expr.is_none() {
            let at = if f.path.is_some() { format!("{fp}.path") } else { format!("{fp}.name") };
            let span = f.path.as_ref().map_or(f.name.span(), |p| p.span());
            let value = path.clone().unwrap_or_else(|| JsonPath(vec![PathStep::Key(fname.clone())]));
            claim(ctx, at, &span, &fname, value, read)?;
        }
        out.push(FieldConfig { name: fname, ty: f.ty, required: f.required, path, expr });
    }
    Ok(out)
}

/// The text of a SQL expression, checked for size here; its meaning is checked
/// by the ingest crate's transform compiler (`weir_ingest::transform`).
fn expression(ctx: &Ctx, path: &str, e: &Spanned<String>) -> Result<String, ConfigError> {
    let text = e.get_ref().trim();
    if text.is_empty() {
        return Err(ctx.err(path, &e.span(), "the expression is empty"));
    }
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(ctx.err(path, &e.span(), format!("the expression is longer than {MAX_EXPRESSION_BYTES} bytes")));
    }
    Ok(text.to_string())
}

/// Claims the JSON value at `path` for field `name`: refused when another
/// field (or the event time) reads the same value, or one inside the other.
fn claim(
    ctx: &Ctx,
    at: String,
    span: &std::ops::Range<usize>,
    name: &str,
    path: JsonPath,
    read: &mut Vec<(String, JsonPath)>,
) -> Result<(), ConfigError> {
    for (other, other_path) in read.iter() {
        let message = if &path == other_path {
            format!("`{name}` reads `{path}`, which `{other}` reads already")
        } else if path.0.starts_with(&other_path.0) {
            format!("`{name}` reads `{path}`, inside `{other_path}`, which `{other}` reads whole")
        } else if other_path.0.starts_with(&path.0) {
            format!("`{name}` reads `{path}` whole, and `{other}` reads `{other_path}` inside it")
        } else {
            continue;
        };
        return Err(ctx.err(at, span, message));
    }
    read.push((name.to_string(), path));
    Ok(())
}

/// The event-time field and its formats, with the span of `time` for later errors.
fn time(
    ctx: &Ctx,
    p: &str,
    time: Spanned<RawTime>,
    has: &dyn Fn(&str) -> Option<FieldConfig>,
    read: &mut Vec<(String, JsonPath)>,
) -> Result<(TimeConfig, std::ops::Range<usize>), ConfigError> {
    let time_span = time.span();
    let time_raw = time.into_inner();
    let time_field = time_raw.field.get_ref().clone();
    if has(&time_field).is_some() {
        return Err(ctx.err(
            format!("{p}time.field"),
            &time_raw.field.span(),
            format!("`{time_field}` is the event-time field; do not declare it as a dimension or metric too"),
        ));
    }
    if !is_identifier(&time_field) {
        return Err(ctx.err(
            format!("{p}time.field"),
            &time_raw.field.span(),
            format!("`{time_field}` is not a valid field name"),
        ));
    }
    let path = match &time_raw.path {
        Some(text) => {
            Some(JsonPath::parse(text.get_ref()).map_err(|m| ctx.err(format!("{p}time.path"), &text.span(), m))?)
        }
        None => None,
    };
    let (at, span) = match &time_raw.path {
        Some(text) => (format!("{p}time.path"), text.span()),
        None => (format!("{p}time.field"), time_raw.field.span()),
    };
    let value = path.clone().unwrap_or_else(|| JsonPath(vec![PathStep::Key(time_field.clone())]));
    claim(ctx, at, &span, &time_field, value, read)?;
    let formats = time_raw.formats.unwrap_or_else(|| vec![TimeFormat::Rfc3339, TimeFormat::EpochMillis]);
    if formats.is_empty() {
        return Err(ctx.err(format!("{p}time.formats"), &time_span, "give at least one time format"));
    }
    if formats.contains(&TimeFormat::EpochMillis) && formats.contains(&TimeFormat::EpochSeconds) {
        return Err(ctx.err(
            format!("{p}time.formats"),
            &time_span,
            "epoch_millis and epoch_seconds cannot both be accepted: an integer would be ambiguous",
        ));
    }
    Ok((TimeConfig { field: time_field, formats, path }, time_span))
}

/// The partitioning key: a string or int64 dimension.
fn key(
    ctx: &Ctx,
    p: &str,
    key: Option<Spanned<String>>,
    has: &dyn Fn(&str) -> Option<FieldConfig>,
) -> Result<Option<String>, ConfigError> {
    Ok(match key {
        Some(k) => {
            let kname = k.get_ref().clone();
            match has(&kname) {
                Some(f) if f.path.is_some() || f.expr.is_some() => {
                    return Err(ctx.err(
                        format!("{p}key"),
                        &k.span(),
                        format!("key field `{kname}` must be read from the top level of the record, by its name: records are routed by it before they are decoded"),
                    ));
                }
                Some(f) if f.ty == FieldType::String || f.ty == FieldType::Int64 => Some(kname),
                Some(f) => {
                    return Err(ctx.err(
                        format!("{p}key"),
                        &k.span(),
                        format!("key field `{kname}` is {}, it must be string or int64", f.ty),
                    ));
                }
                None => {
                    return Err(ctx.err(
                        format!("{p}key"),
                        &k.span(),
                        format!("key field `{kname}` is not a declared dimension"),
                    ));
                }
            }
        }
        None => None,
    })
}

/// Dedup by an event id: a string or int64 dimension, within a window.
fn dedup(
    ctx: &Ctx,
    p: &str,
    name: &str,
    dedup: Option<Spanned<RawDedup>>,
    dimensions: &[FieldConfig],
) -> Result<Option<DedupConfig>, ConfigError> {
    Ok(match dedup {
        Some(d) => {
            let d = d.into_inner();
            let fname = d.field.get_ref().clone();
            match dimensions.iter().find(|f| f.name == fname) {
                Some(f) if matches!(f.ty, FieldType::String | FieldType::Int64) => {}
                Some(f) => {
                    return Err(ctx.err(
                        format!("{p}dedup.field"),
                        &d.field.span(),
                        format!("`{fname}` is {}; an event id must be string or int64", f.ty),
                    ));
                }
                None => {
                    return Err(ctx.err(
                        format!("{p}dedup.field"),
                        &d.field.span(),
                        format!("`{fname}` is not a dimension of table `{name}`"),
                    ));
                }
            }
            let window_ms = ctx.duration(&format!("{p}dedup.window"), &d.window)?.as_millis() as i64;
            if window_ms <= 0 {
                return Err(ctx.err(format!("{p}dedup.window"), &d.window.span(), "must be longer than zero"));
            }
            Some(DedupConfig { field: fname, window_ms })
        }
        None => None,
    })
}

/// The rollups; `rollup_names` holds the names of rollups and session windows.
#[allow(clippy::too_many_arguments)]
fn rollups(
    ctx: &Ctx,
    p: &str,
    name: &str,
    list: Vec<Spanned<RawRollup>>,
    segment_granularity_ms: i64,
    dimensions: &[FieldConfig],
    has: &dyn Fn(&str) -> Option<FieldConfig>,
    rollup_names: &mut HashSet<String>,
) -> Result<Vec<RollupConfig>, ConfigError> {
    let mut rollups = Vec::new();
    for (j, r) in list.into_iter().enumerate() {
        let rp = format!("{p}rollups[{j}]");
        let r = r.into_inner();
        let rname = r.name.get_ref().clone();
        if !is_identifier(&rname) {
            return Err(ctx.err(format!("{rp}.name"), &r.name.span(), format!("`{rname}` is not a valid rollup name")));
        }
        if !rollup_names.insert(rname.clone()) {
            return Err(ctx.err(format!("{rp}.name"), &r.name.span(), format!("rollup `{rname}` is declared twice")));
        }
        let granularity_ms = ctx.duration(&format!("{rp}.granularity"), &r.granularity)?.as_millis() as i64;
        if granularity_ms <= 0 || segment_granularity_ms % granularity_ms != 0 {
            return Err(ctx.err(
                format!("{rp}.granularity"),
                &r.granularity.span(),
                "must be longer than zero and divide the table's segment_granularity evenly",
            ));
        }
        let mut dims = Vec::new();
        for (k, d) in r.dimensions.iter().enumerate() {
            let dname = d.get_ref();
            match has(dname) {
                Some(f) if dimensions.iter().any(|x| x.name == *dname) => {
                    if f.ty == FieldType::Float64 {
                        return Err(ctx.err(
                            format!("{rp}.dimensions[{k}]"),
                            &d.span(),
                            format!("`{dname}` is float64; a rollup groups by string, int64 or bool dimensions"),
                        ));
                    }
                    if dims.contains(&f.name) {
                        return Err(ctx.err(
                            format!("{rp}.dimensions[{k}]"),
                            &d.span(),
                            format!("dimension `{dname}` is listed twice"),
                        ));
                    }
                    dims.push(f.name)
                }
                _ => {
                    return Err(ctx.err(
                        format!("{rp}.dimensions[{k}]"),
                        &d.span(),
                        format!("`{dname}` is not a dimension of table `{name}`"),
                    ));
                }
            }
        }
        let mut out_names: HashSet<String> = dims.iter().cloned().collect();
        out_names.insert("bucket".into());
        let aggregations = validate_aggregations(ctx, &rp, &rname, name, r.aggregations, &mut out_names, &has)?;
        if aggregations.is_empty() {
            return Err(ctx.err(
                format!("{rp}.aggregations"),
                &r.name.span(),
                "a rollup needs at least one aggregation",
            ));
        }
        rollups.push(RollupConfig { name: rname, granularity_ms, dimensions: dims, aggregations });
    }
    Ok(rollups)
}

/// The session windows; their names share `rollup_names` with the rollups.
fn sessions(
    ctx: &Ctx,
    p: &str,
    name: &str,
    list: Vec<Spanned<RawSession>>,
    dimensions: &[FieldConfig],
    has: &dyn Fn(&str) -> Option<FieldConfig>,
    rollup_names: &mut HashSet<String>,
) -> Result<Vec<SessionConfig>, ConfigError> {
    let mut sessions = Vec::new();
    for (j, w) in list.into_iter().enumerate() {
        let wp = format!("{p}sessions[{j}]");
        let w = w.into_inner();
        let wname = w.name.get_ref().clone();
        if !is_identifier(&wname) {
            return Err(ctx.err(
                format!("{wp}.name"),
                &w.name.span(),
                format!("`{wname}` is not a valid session window name"),
            ));
        }
        if !rollup_names.insert(wname.clone()) {
            return Err(ctx.err(
                format!("{wp}.name"),
                &w.name.span(),
                format!("`{wname}` is already the name of a rollup or session window"),
            ));
        }
        let kname = w.key.get_ref().clone();
        match dimensions.iter().find(|d| d.name == kname) {
            Some(d) if d.ty != FieldType::Float64 => {}
            Some(_) => {
                return Err(ctx.err(
                    format!("{wp}.key"),
                    &w.key.span(),
                    format!("`{kname}` is float64; a session key must be string, int64 or bool"),
                ));
            }
            None => {
                return Err(ctx.err(
                    format!("{wp}.key"),
                    &w.key.span(),
                    format!("`{kname}` is not a dimension of table `{name}`"),
                ));
            }
        }
        let gap_ms = ctx.duration(&format!("{wp}.gap"), &w.gap)?.as_millis() as i64;
        if gap_ms <= 0 {
            return Err(ctx.err(format!("{wp}.gap"), &w.gap.span(), "must be longer than zero"));
        }
        let mut out_names: HashSet<String> =
            [kname.clone(), "session_start".into(), "session_end".into(), "closed".into()].into_iter().collect();
        let aggregations = validate_aggregations(ctx, &wp, &wname, name, w.aggregations, &mut out_names, &has)?;
        if aggregations.is_empty() {
            return Err(ctx.err(
                format!("{wp}.aggregations"),
                &w.name.span(),
                "a session window needs at least one aggregation",
            ));
        }
        sessions.push(SessionConfig { name: wname, key: kname, gap_ms, aggregations });
    }
    Ok(sessions)
}

/// The Kafka source; its partition count comes from the topic when the table
/// leaves it out (`partitions_from_topic`).
fn kafka(
    ctx: &Ctx,
    p: &str,
    name: &str,
    kafka: Option<Spanned<RawKafka>>,
    partitions_from_topic: bool,
) -> Result<Option<KafkaConfig>, ConfigError> {
    Ok(match kafka {
        Some(k) => {
            let span = k.span();
            let k = k.into_inner();
            let servers = k.bootstrap_servers.get_ref().trim().to_string();
            if servers.is_empty() {
                return Err(ctx.err(
                    format!("{p}kafka.bootstrap_servers"),
                    &k.bootstrap_servers.span(),
                    "name at least one broker, like `127.0.0.1:9092`",
                ));
            }
            for key in
                ["group.id", "bootstrap.servers", "enable.auto.commit", "auto.offset.reset", "enable.auto.offset.store"]
            {
                if k.properties.contains_key(key) {
                    return Err(ctx.err(
                        format!("{p}kafka.properties"),
                        &span,
                        format!("`{key}` is set by Weir (offsets come from its manifest); remove it"),
                    ));
                }
            }
            if k.rebalance
                && k.properties.get("partition.assignment.strategy").is_some_and(|v| v.contains("cooperative"))
            {
                return Err(ctx.err(
                    format!("{p}kafka.properties"),
                    &span,
                    "`rebalance` works with the eager assignment strategies (range, roundrobin); cooperative-sticky is not supported",
                ));
            }
            let topic = k.topic.map_or_else(|| name.to_string(), |t| t.into_inner());
            if topic.is_empty() {
                return Err(ctx.err(format!("{p}kafka.topic"), &span, "must not be empty"));
            }
            Some(KafkaConfig {
                bootstrap_servers: servers,
                topic,
                group_id: k.group_id.map_or_else(|| format!("weir-{name}"), |g| g.into_inner()),
                properties: k.properties,
                partitions_from_topic,
                rebalance: k.rebalance,
            })
        }
        None => None,
    })
}

/// Avro values (only with a Kafka source): one writer schema or schemas by id.
fn avro(
    ctx: &Ctx,
    p: &str,
    avro: Option<Spanned<RawAvro>>,
    has_kafka: bool,
) -> Result<Option<AvroConfig>, ConfigError> {
    Ok(match avro {
        Some(a) => {
            let span = a.span();
            let a = a.into_inner();
            if !has_kafka {
                return Err(ctx.err(
                    format!("{p}avro"),
                    &span,
                    "Avro values need a Kafka source (`[tables.kafka]`); the embedded log takes JSON",
                ));
            }
            let mut confluent = std::collections::BTreeMap::new();
            for (id, schema) in a.confluent {
                let n: u32 = id.parse().map_err(|_| {
                    ctx.err(format!("{p}avro.confluent"), &span, format!("`{id}` is not a schema id (a number)"))
                })?;
                confluent.insert(n, schema);
            }
            match (&a.schema, confluent.is_empty()) {
                (Some(_), false) => {
                    return Err(ctx.err(
                        format!("{p}avro"),
                        &span,
                        "give either `schema` (plain binary datums) or `confluent` (schemas by id), not both",
                    ));
                }
                (None, true) => {
                    return Err(ctx.err(
                        format!("{p}avro"),
                        &span,
                        "give the writer schema: `schema`, or `confluent` with the schemas by id",
                    ));
                }
                _ => {}
            }
            Some(AvroConfig { schema: a.schema, confluent })
        }
        None => None,
    })
}

/// Validates the aggregations of a rollup or session window; `out_names` holds the
/// output columns already taken.
fn validate_aggregations(
    ctx: &Ctx,
    rp: &str,
    rname: &str,
    name: &str,
    raw: Vec<Spanned<RawAgg>>,
    out_names: &mut HashSet<String>,
    has: &dyn Fn(&str) -> Option<FieldConfig>,
) -> Result<Vec<Aggregation>, ConfigError> {
    let mut aggregations = Vec::new();
    for (k, a) in raw.into_iter().enumerate() {
        let ap = format!("{rp}.aggregations[{k}]");
        let aspan = a.span();
        let a = a.into_inner();
        let aname = a.name.get_ref().clone();
        if !is_identifier(&aname) {
            return Err(ctx.err(format!("{ap}.name"), &a.name.span(), format!("`{aname}` is not a valid column name")));
        }
        if !out_names.insert(aname.clone()) {
            return Err(ctx.err(
                format!("{ap}.name"),
                &a.name.span(),
                format!("column `{aname}` appears twice in `{rname}`"),
            ));
        }
        let need_field = |numeric: bool| -> Result<String, ConfigError> {
            let f = a.field.as_ref().ok_or_else(|| {
                ctx.err(format!("{ap}.field"), &aspan, format!("`{}` needs a `field`", a.func.get_ref()))
            })?;
            let fname = f.get_ref();
            match has(fname) {
                Some(fc) if numeric && !matches!(fc.ty, FieldType::Int64 | FieldType::Float64) => Err(ctx.err(
                    format!("{ap}.field"),
                    &f.span(),
                    format!("`{fname}` is {}, `{}` needs a numeric field", fc.ty, a.func.get_ref()),
                )),
                Some(fc) => Ok(fc.name),
                None => Err(ctx.err(
                    format!("{ap}.field"),
                    &f.span(),
                    format!("`{fname}` is not a field of table `{name}`"),
                )),
            }
        };
        let func = match a.func.get_ref().as_str() {
            "count" => AggFn::Count,
            "sum" => AggFn::Sum { field: need_field(true)? },
            "min" => AggFn::Min { field: need_field(true)? },
            "max" => AggFn::Max { field: need_field(true)? },
            "hll" | "distinct" => {
                let precision = match &a.precision {
                    Some(pr) if !(MIN_PRECISION..=MAX_PRECISION).contains(pr.get_ref()) => {
                        return Err(ctx.err(
                            format!("{ap}.precision"),
                            &pr.span(),
                            format!("precision must be between {MIN_PRECISION} and {MAX_PRECISION}"),
                        ));
                    }
                    Some(pr) => *pr.get_ref(),
                    None => DEFAULT_PRECISION,
                };
                AggFn::Hll { field: need_field(false)?, precision }
            }
            other => {
                return Err(ctx.err(
                    format!("{ap}.fn"),
                    &a.func.span(),
                    format!("unknown aggregation `{other}` (use count, sum, min, max or hll)"),
                ));
            }
        };
        aggregations.push(Aggregation { name: aname, func });
    }
    Ok(aggregations)
}
