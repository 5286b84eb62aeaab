-- The analysts' views and macros of the lake's DuckDB file (cityvitals/views.py loads this).
-- They stand on the table views (read_parquet globs), so they read the Parquet files that are
-- complete when a query starts, like every other view. Statements are separated by a line
-- holding only ';'. {SEVERITIES} is replaced by the list of severities, mildest first, and
-- {DAY_OFFSET_US} by the UTC offset of the catalogue's time zone, in microseconds.
-- Days are the catalogue's (local_day), as the daily indicator windows and the rating's
-- periods are; the lake's date partitions are UTC days.

-- The UTC calendar day of a timestamptz, whatever the session's TimeZone.
CREATE MACRO utc_day(ts) AS CAST(make_timestamp(epoch_us(ts)) AS DATE)
;
-- The calendar day of a timestamptz in the catalogue's time zone (where the daily windows run
-- from midnight), whatever the session's TimeZone.
CREATE MACRO local_day(ts) AS CAST(make_timestamp(epoch_us(ts) + {DAY_OFFSET_US}) AS DATE)
;
-- 0 for normal, 1 for blue ... 4 for red.
CREATE MACRO severity_rank(s) AS list_position({SEVERITIES}, s) - 1
;
-- The severity of a rank (the inverse of severity_rank).
CREATE MACRO severity_of(r) AS {SEVERITIES}[r + 1]
;
-- The latest value of every indicator and entity (arg_max, no window function: one pass).
CREATE VIEW latest_values AS
SELECT
    indicator_id,
    entity_id,
    any_value(sector) AS sector,
    any_value(entity_type) AS entity_type,
    max(window_start) AS window_start,
    max(window_end) AS window_end,
    arg_max(value, window_start) AS value,
    arg_max(samples, window_start) AS samples,
    any_value(unit) AS unit,
    arg_max(level, window_start) AS level
FROM indicator_values
GROUP BY indicator_id, entity_id
;
-- Every sector now, from the latest values: how many series, how many out of normal, the gravest.
CREATE VIEW sector_now AS
SELECT
    sector,
    count(DISTINCT indicator_id) AS indicators,
    count(*) AS series,
    count(*) FILTER (level <> 'normal') AS out_of_normal,
    severity_of(max(severity_rank(level))) AS worst_level,
    max(window_end) AS as_of
FROM latest_values
GROUP BY sector
;
-- Every sector over time, in 15-minute buckets of window start: values, values out of normal,
-- the gravest level.
CREATE VIEW sector_timeline AS
SELECT
    sector,
    to_timestamp(floor(epoch(window_start) / 900) * 900) AS bucket,
    count(*) AS "values",
    count(*) FILTER (level <> 'normal') AS out_of_normal,
    severity_of(max(severity_rank(level))) AS worst_level
FROM indicator_values
GROUP BY ALL
;
-- Every alert, one row: where, its severity now and at its peak, its last state.
CREATE VIEW alerts AS
SELECT
    alert_id,
    any_value(rule_id) AS rule_id,
    any_value(indicator_id) AS indicator_id,
    any_value(sector) AS sector,
    any_value(entity_type) AS entity_type,
    any_value(entity_id) AS entity_id,
    arg_max(severity, sequence) AS severity,
    severity_of(max(severity_rank(severity))) AS peak_severity,
    arg_max(state, sequence) AS last_state,
    min(first_ts) AS first_ts,
    max(event_ts) AS last_change_ts,
    arg_max(value, sequence) AS value,
    arg_max(peak_value, sequence) AS peak_value,
    count(*) AS changes
FROM breaches
GROUP BY alert_id
;
-- Alerts whose latest record is not 'cleared'.
CREATE VIEW open_alerts AS
SELECT * FROM alerts WHERE last_state <> 'cleared'
;
-- One alert's life, change by change, with the seconds from the start of its first window in
-- breach and from the change before: SELECT * FROM alert_life('<alert_id>').
CREATE MACRO alert_life(aid) AS TABLE
SELECT
    sequence,
    state,
    previous_severity,
    severity,
    event_ts,
    epoch(event_ts) - epoch(first_ts) AS since_first_s,
    epoch(event_ts) - epoch(lag(event_ts) OVER (ORDER BY sequence)) AS since_previous_s,
    value,
    bound,
    peak_value,
    evidence,
    rule_id,
    indicator_id,
    entity_id,
    first_ts
FROM breaches
WHERE alert_id = aid
ORDER BY sequence
;
-- Alerts per sector and day (local_day: the day their first window in breach began), by peak
-- severity.
CREATE VIEW breaches_per_sector_day AS
SELECT
    local_day(first_ts) AS day,
    sector,
    count(*) AS alerts,
    count(*) FILTER (peak_severity = 'red') AS red,
    count(*) FILTER (peak_severity = 'orange') AS orange,
    count(*) FILTER (peak_severity = 'yellow') AS yellow,
    count(*) FILTER (peak_severity = 'blue') AS blue
FROM alerts
GROUP BY ALL
;
-- The online rate of every device type in every grid, window by window (device.online_rate),
-- with the devices that went offline in the window (device_status).
CREATE VIEW device_online_rate AS
WITH rates AS (
    SELECT
        split_part(entity_id, '/', 1) AS device_type,
        split_part(entity_id, '/', 2) AS grid_id,
        window_start,
        window_end,
        value AS online_rate,
        samples AS devices,
        level
    FROM indicator_values
    WHERE indicator_id = 'device.online_rate'
),
went_offline AS (
    SELECT
        device_type,
        grid_id,
        to_timestamp(floor(epoch(event_ts) / 300) * 300) AS window_start,
        count(*) AS went_offline
    FROM device_status
    WHERE status = 'offline'
    GROUP BY ALL
)
SELECT r.*, coalesce(o.went_offline, 0) AS went_offline
FROM rates AS r
LEFT JOIN went_offline AS o USING (device_type, grid_id, window_start)
;
-- 1510 dispatch compliance per day (local_day), by department (event_class '*') and by class
-- (department '*'): orders dispatched and dispatched on time (workorder.on_time_rate and
-- workorder.on_time_rate_by_class, weighted by their orders), and orders that went overdue
-- (order_deadlines). The flow measures no on-time rate crossed by department and class.
CREATE VIEW workorder_sla AS
WITH rates AS (
    SELECT
        CASE WHEN indicator_id = 'workorder.on_time_rate' THEN entity_id ELSE '*' END
            AS department,
        CASE WHEN indicator_id = 'workorder.on_time_rate' THEN '*'
            ELSE split_part(entity_id, '/', 2) END AS event_class,
        local_day(window_start) AS day,
        sum(samples) AS dispatched,
        round(sum(value * samples)) AS on_time
    FROM indicator_values
    WHERE indicator_id IN ('workorder.on_time_rate', 'workorder.on_time_rate_by_class')
    GROUP BY ALL
),
overdue AS (
    SELECT
        coalesce(department, '*') AS department,
        coalesce(event_class, '*') AS event_class,
        local_day(event_ts) AS day,
        count(DISTINCT order_id) AS overdue
    FROM order_deadlines
    WHERE state = 'overdue'
    GROUP BY GROUPING SETS ((department, local_day(event_ts)), (event_class, local_day(event_ts)))
)
SELECT
    department,
    event_class,
    day,
    coalesce(r.dispatched, 0) AS dispatched,
    coalesce(r.on_time, 0) AS on_time,
    r.on_time / nullif(r.dispatched, 0) AS compliance,
    coalesce(o.overdue, 0) AS overdue
FROM rates AS r
FULL OUTER JOIN overdue AS o USING (department, event_class, day)
;
-- One risk point's level changes in time order, with the seconds each level held (null for the
-- level in force now): SELECT * FROM risk_level_history('<risk_point_id>').
CREATE MACRO risk_level_history(point) AS TABLE
SELECT
    event_ts,
    from_level,
    to_level,
    change,
    score,
    epoch(lead(event_ts) OVER (ORDER BY event_ts, emitted_at)) - epoch(event_ts) AS held_for_s,
    factors,
    model,
    category,
    grid_id,
    district_id,
    risk_point_id
FROM risk_levels
WHERE risk_point_id = point
ORDER BY event_ts, emitted_at
;
-- Every risk point that has ever changed level: its level now and since when, the score of that
-- change, its gravest level and how many changes. A point never graded up is normal and absent.
CREATE VIEW risk_points_now AS
SELECT
    risk_point_id,
    any_value(category) AS category,
    any_value(grid_id) AS grid_id,
    arg_max(to_level, event_ts) AS level,
    max(event_ts) AS since,
    arg_max(score, event_ts) AS score,
    severity_of(max(severity_rank(to_level))) AS peak_level,
    count(*) AS changes
FROM risk_levels
GROUP BY risk_point_id
