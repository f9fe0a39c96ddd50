//! Working hours into Slots. A practitioner's availability is R4's own
//! `PractitionerRole.availableTime` (days of the week and a start and end time; a break is two
//! entries, 09:00–12:00 and 13:00–17:00), leave is `PractitionerRole.notAvailable.during`,
//! and the horizon is `Schedule.planningHorizon`. R4 has no element for the length of a
//! slot: Hearth reads it from the extension [`SLOT_LENGTH`] on an `availableTime` entry
//! (a Duration of 15, 30, 45 or 60 minutes; 30 without it). Times of day are UTC.
//! <https://hl7.org/fhir/R4/practitionerrole.html>, <https://hl7.org/fhir/R4/schedule.html>

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc, Weekday};
use serde_json::Value;

/// The extension that gives an `availableTime` entry its slot length.
pub const SLOT_LENGTH: &str = "http://hearth.health/fhir/StructureDefinition/slot-length";

/// One `availableTime` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hours {
    pub days: Vec<Weekday>,
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub slot_minutes: i64,
}

fn weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

fn slot_minutes(entry: &Value) -> Result<i64, String> {
    let Some(ext) = entry["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"] == SLOT_LENGTH)
    else {
        return Ok(30);
    };
    let d = &ext["valueDuration"];
    let minutes = match (d["value"].as_f64(), d["code"].as_str()) {
        (Some(v), Some("min")) => v,
        (Some(v), Some("h")) => v * 60.0,
        _ => return Err("the slot-length extension needs a valueDuration in min or h".into()),
    };
    match minutes as i64 {
        m @ (15 | 30 | 45 | 60) if (minutes - m as f64).abs() < f64::EPSILON => Ok(m),
        _ => Err(format!(
            "a slot lasts 15, 30, 45 or 60 minutes, not {minutes}"
        )),
    }
}

/// The working hours of a PractitionerRole; `Err` says what is wrong with them.
pub fn hours(role: &Value) -> Result<Vec<Hours>, String> {
    let mut out = Vec::new();
    for entry in role["availableTime"].as_array().into_iter().flatten() {
        let days = entry["daysOfWeek"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().and_then(weekday))
            .collect::<Vec<_>>();
        let all_day = entry["allDay"].as_bool() == Some(true);
        let time = |k: &str| {
            entry[k]
                .as_str()
                .and_then(|t| NaiveTime::parse_from_str(t, "%H:%M:%S").ok())
        };
        let (start, end) = if all_day {
            (
                NaiveTime::MIN,
                NaiveTime::from_hms_opt(23, 59, 59).unwrap_or(NaiveTime::MIN),
            )
        } else {
            match (time("availableStartTime"), time("availableEndTime")) {
                (Some(s), Some(e)) if s < e => (s, e),
                _ => {
                    return Err(
                        "each availableTime needs availableStartTime before availableEndTime (or allDay)"
                            .into(),
                    )
                }
            }
        };
        out.push(Hours {
            days: if days.is_empty() {
                vec![
                    Weekday::Mon,
                    Weekday::Tue,
                    Weekday::Wed,
                    Weekday::Thu,
                    Weekday::Fri,
                ]
            } else {
                days
            },
            start,
            end,
            slot_minutes: slot_minutes(entry)?,
        });
    }
    Ok(out)
}

/// Refuses working hours that overlap on some day: a slot would be made twice.
pub fn check_overlaps(all: &[Hours]) -> Result<(), String> {
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let same_day = a.days.iter().find(|d| b.days.contains(d));
            if let Some(day) = same_day {
                if a.start < b.end && b.start < a.end {
                    return Err(format!(
                        "the availability {}–{} overlaps {}–{} on {day}",
                        a.start.format("%H:%M"),
                        a.end.format("%H:%M"),
                        b.start.format("%H:%M"),
                        b.end.format("%H:%M")
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The leave periods of a PractitionerRole (`notAvailable.during`).
pub fn leave(role: &Value) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let instant = |v: &Value| {
        let text = v.as_str()?;
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .ok()
                    .map(|d| d.and_time(NaiveTime::MIN).and_utc())
            })
    };
    role["notAvailable"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let during = &n["during"];
            let start = instant(&during["start"]).unwrap_or(DateTime::<Utc>::MIN_UTC);
            let end = match instant(&during["end"]) {
                // A date-only end includes that whole day.
                Some(e) if during["end"].as_str().is_some_and(|t| t.len() == 10) => {
                    e + Duration::days(1)
                }
                Some(e) => e,
                None => DateTime::<Utc>::MAX_UTC,
            };
            (start, end)
        })
        .collect()
}

/// The slots of `hours` on the days `from` (inclusive) to `to` (exclusive), without those
/// overlapping `leave` or starting before `not_before`, in time order.
pub fn slots(
    hours: &[Hours],
    leave: &[(DateTime<Utc>, DateTime<Utc>)],
    from: NaiveDate,
    to: NaiveDate,
    not_before: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut day = from;
    while day < to {
        for h in hours.iter().filter(|h| h.days.contains(&day.weekday())) {
            let mut start = day.and_time(h.start).and_utc();
            let close = day.and_time(h.end).and_utc();
            let step = Duration::minutes(h.slot_minutes);
            while start + step <= close {
                let end = start + step;
                let on_leave = leave.iter().any(|(ls, le)| start < *le && *ls < end);
                if !on_leave && start >= not_before {
                    out.push((start, end));
                }
                start = end;
            }
        }
        day = day.succ_opt().unwrap_or(to);
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role() -> Value {
        json!({"resourceType": "PractitionerRole",
            "availableTime": [
                {"daysOfWeek": ["mon", "wed"], "availableStartTime": "09:00:00", "availableEndTime": "12:00:00"},
                {"daysOfWeek": ["mon"], "availableStartTime": "13:00:00", "availableEndTime": "14:00:00",
                 "extension": [{"url": SLOT_LENGTH, "valueDuration": {"value": 15, "unit": "min",
                    "system": "http://unitsofmeasure.org", "code": "min"}}]}],
            "notAvailable": [{"description": "leave", "during": {"start": "2030-01-09", "end": "2030-01-09"}}]})
    }

    #[test]
    fn working_hours_become_slots_around_breaks_and_leave() {
        let h = hours(&role()).unwrap();
        assert_eq!(h[0].slot_minutes, 30);
        assert_eq!(h[1].slot_minutes, 15);
        check_overlaps(&h).unwrap();
        // 2030-01-07 is a Monday; Wednesday the 9th is leave.
        let from = NaiveDate::from_ymd_opt(2030, 1, 7).unwrap();
        let to = NaiveDate::from_ymd_opt(2030, 1, 10).unwrap();
        let made = slots(&h, &leave(&role()), from, to, DateTime::<Utc>::MIN_UTC);
        // Monday: 6 half-hours in the morning, 4 quarter-hours after the break.
        assert_eq!(made.len(), 10);
        assert_eq!(made[0].0.to_rfc3339(), "2030-01-07T09:00:00+00:00");
        assert_eq!(made[9].1.to_rfc3339(), "2030-01-07T14:00:00+00:00");
        assert!(made
            .iter()
            .all(|(s, _)| s.date_naive() != NaiveDate::from_ymd_opt(2030, 1, 9).unwrap()));
    }

    #[test]
    fn overlapping_hours_and_odd_slot_lengths_are_refused() {
        let overlapping = json!({"availableTime": [
            {"daysOfWeek": ["tue"], "availableStartTime": "09:00:00", "availableEndTime": "12:00:00"},
            {"daysOfWeek": ["tue", "thu"], "availableStartTime": "11:00:00", "availableEndTime": "13:00:00"}]});
        let err = check_overlaps(&hours(&overlapping).unwrap()).unwrap_err();
        assert!(err.contains("overlaps") && err.contains("Tue"), "{err}");
        let odd = json!({"availableTime": [{"availableStartTime": "09:00:00", "availableEndTime": "10:00:00",
            "extension": [{"url": SLOT_LENGTH, "valueDuration": {"value": 20, "code": "min"}}]}]});
        assert!(hours(&odd).unwrap_err().contains("15, 30, 45 or 60"));
    }
}
