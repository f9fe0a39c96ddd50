//! `Appointment/$find`: which free Slots to propose first, and why. Pure code: the HTTP layer
//! gathers the candidate Slots and the patient's past visits, this file scores them.
//!
//! The score (0 to 100) is a sum of named parts, each reported as a reason:
//! - **specialty** (up to 40): the symptoms are routed to specialties through [`ROUTES`], a
//!   curated table of symptom words and SNOMED CT findings; symptoms it does not know go to
//!   general practice, and general practice may see anything (15);
//! - **timing** (up to 30): sooner is better, strongly so when the request is urgent; a Slot
//!   after the urgency's window gets nothing here;
//! - **continuity** (up to 20): a practitioner the patient saw before;
//! - **habits** (up to 10): the patient's usual weekday and time of day.
//!
//! Explicit inputs (practitioner, specialty, service type, the window) filter the candidates
//! before scoring, so the client can always override the routing. Times are UTC.
//! Based on the Argonaut Scheduling IG's `$find`
//! (<http://fhir.org/guides/argonaut/scheduling/OperationDefinition-appointment-find.html>).

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use std::collections::HashMap;

pub const SNOMED: &str = "http://snomed.info/sct";

/// How soon the patient needs to be seen: the R4 request-priority codes.
/// <https://hl7.org/fhir/R4/valueset-request-priority.html>
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    Routine,
    Urgent,
    Asap,
    Stat,
}

impl Urgency {
    pub fn parse(code: &str) -> Result<Urgency, String> {
        match code {
            "routine" => Ok(Urgency::Routine),
            "urgent" => Ok(Urgency::Urgent),
            "asap" => Ok(Urgency::Asap),
            "stat" => Ok(Urgency::Stat),
            other => Err(format!(
                "urgency must be routine, urgent, asap or stat, not '{other}'"
            )),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Urgency::Routine => "routine",
            Urgency::Urgent => "urgent",
            Urgency::Asap => "asap",
            Urgency::Stat => "stat",
        }
    }

    /// How far ahead the patient should be seen: the default search window, and the span
    /// over which the timing part of the score falls to zero.
    pub fn window(self) -> Duration {
        match self {
            Urgency::Routine => Duration::days(14),
            Urgency::Urgent => Duration::days(3),
            Urgency::Asap => Duration::days(1),
            Urgency::Stat => Duration::hours(12),
        }
    }

    /// The most the timing part gives: soonness matters little for routine visits.
    fn timing_weight(self) -> f64 {
        match self {
            Urgency::Routine => 10.0,
            _ => 30.0,
        }
    }
}

/// A practice specialty (SNOMED CT, R4 value set c80-practice-codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Specialty {
    pub code: &'static str,
    pub display: &'static str,
}

pub const GENERAL_PRACTICE: Specialty = Specialty {
    code: "394814009",
    display: "General practice",
};

/// One line of the routing table: symptoms (lowercase words or phrases, and SNOMED CT
/// clinical findings) that a specialty sees.
pub struct Route {
    pub specialty: Specialty,
    pub words: &'static [&'static str],
    pub findings: &'static [&'static str],
}

/// The curated symptom-to-specialty table. A symptom may route to more than one specialty;
/// anything not here routes to general practice. Findings are SNOMED CT codes.
pub const ROUTES: &[Route] = &[
    Route {
        specialty: Specialty {
            code: "394579002",
            display: "Cardiology",
        },
        words: &[
            "chest pain",
            "palpitations",
            "heart racing",
            "irregular heartbeat",
            "fainting",
            "swollen ankles",
        ],
        findings: &["29857009", "80313002", "271594007", "267038008"],
    },
    Route {
        specialty: Specialty {
            code: "394582007",
            display: "Dermatology",
        },
        words: &[
            "rash",
            "itching",
            "itchy",
            "eczema",
            "acne",
            "mole",
            "hives",
            "psoriasis",
        ],
        findings: &[
            "271807003",
            "418290006",
            "43116000",
            "11381005",
            "126485001",
        ],
    },
    Route {
        specialty: Specialty {
            code: "394591006",
            display: "Neurology",
        },
        words: &[
            "headache",
            "migraine",
            "seizure",
            "numbness",
            "tingling",
            "tremor",
            "dizziness",
            "memory loss",
        ],
        findings: &[
            "25064002",
            "37796009",
            "91175000",
            "44077006",
            "26079004",
            "404640003",
        ],
    },
    Route {
        specialty: Specialty {
            code: "394585009",
            display: "Obstetrics and gynecology",
        },
        words: &[
            "pregnancy",
            "pregnant",
            "missed period",
            "pelvic pain",
            "vaginal bleeding",
            "menstrual pain",
        ],
        findings: &["77386006", "30473006", "289530006", "266599000"],
    },
    Route {
        specialty: Specialty {
            code: "394587001",
            display: "Psychiatry",
        },
        words: &[
            "anxiety",
            "depression",
            "depressed",
            "panic",
            "insomnia",
            "low mood",
            "suicidal",
        ],
        findings: &[
            "48694002",
            "35489007",
            "366979004",
            "193462001",
            "225624000",
        ],
    },
    Route {
        specialty: Specialty {
            code: "394801008",
            display: "Surgery-Trauma and orthopedics",
        },
        words: &[
            "back pain",
            "joint pain",
            "knee pain",
            "fracture",
            "sprain",
            "shoulder pain",
            "hip pain",
        ],
        findings: &[
            "161891005",
            "57676002",
            "30989003",
            "125605004",
            "44465007",
            "45326000",
        ],
    },
    Route {
        specialty: Specialty {
            code: "394584008",
            display: "Gastroenterology",
        },
        words: &[
            "abdominal pain",
            "stomach pain",
            "heartburn",
            "diarrhea",
            "diarrhoea",
            "constipation",
            "nausea",
            "vomiting",
            "blood in stool",
        ],
        findings: &[
            "21522001",
            "16331000",
            "62315008",
            "14760008",
            "422587007",
            "422400008",
        ],
    },
    Route {
        specialty: Specialty {
            code: "418112009",
            display: "Pulmonary medicine",
        },
        words: &[
            "cough",
            "shortness of breath",
            "short of breath",
            "wheezing",
            "breathless",
            "asthma",
        ],
        findings: &["49727002", "267036007", "56018004", "195967001"],
    },
    Route {
        specialty: Specialty {
            code: "394594003",
            display: "Ophthalmology",
        },
        words: &["blurred vision", "eye pain", "red eye", "vision loss"],
        findings: &["111516008", "41652007", "703630003"],
    },
    Route {
        specialty: Specialty {
            code: "394612005",
            display: "Urology",
        },
        words: &[
            "blood in urine",
            "painful urination",
            "urinary frequency",
            "kidney stone",
        ],
        findings: &["34436003", "49650001", "162116003"],
    },
];

/// Where the symptoms lead: each specialty with the symptoms that chose it, and the symptoms
/// that matched nothing (they go to general practice).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Routing {
    pub specialties: Vec<(Specialty, Vec<String>)>,
    pub unmatched: Vec<String>,
}

impl Routing {
    /// The specialty codes the symptoms lead to, and general practice, which sees anything
    /// (none without symptoms).
    pub fn codes(&self) -> Vec<&'static str> {
        let mut codes: Vec<&'static str> = self.specialties.iter().map(|(s, _)| s.code).collect();
        if !self.is_empty() && !codes.contains(&GENERAL_PRACTICE.code) {
            codes.push(GENERAL_PRACTICE.code);
        }
        codes
    }

    pub fn is_empty(&self) -> bool {
        self.specialties.is_empty() && self.unmatched.is_empty()
    }
}

/// Routes symptoms: free text (matched on whole words and phrases, case-insensitively) or
/// SNOMED CT findings (`http://snomed.info/sct|29857009` or the bare code).
pub fn route(symptoms: &[String]) -> Routing {
    let mut routing = Routing::default();
    for symptom in symptoms {
        let symptom = symptom.trim();
        if symptom.is_empty() {
            continue;
        }
        let code = symptom
            .strip_prefix(SNOMED)
            .and_then(|c| c.strip_prefix('|'))
            .unwrap_or(symptom);
        let words = normalise(symptom);
        let mut matched = false;
        for r in ROUTES {
            let hit = r.findings.contains(&code)
                || r.words.iter().any(|w| words.contains(&format!(" {w} ")));
            if hit {
                matched = true;
                match routing
                    .specialties
                    .iter_mut()
                    .find(|(s, _)| *s == r.specialty)
                {
                    Some((_, why)) => why.push(symptom.to_string()),
                    None => routing
                        .specialties
                        .push((r.specialty, vec![symptom.to_string()])),
                }
            }
        }
        if !matched {
            routing.unmatched.push(symptom.to_string());
        }
    }
    routing
}

/// Lowercase words separated by single spaces, with a space at each end (for whole-word
/// matching).
fn normalise(text: &str) -> String {
    let mut out = String::from(" ");
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        out.push_str(&word.to_lowercase());
        out.push(' ');
    }
    out
}

/// A free Slot that could be proposed.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub slot: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `Practitioner/[id]` of the Schedule, if it has one.
    pub practitioner: Option<String>,
    /// Specialty codes of the Schedule and of its practitioner's roles.
    pub specialties: Vec<String>,
}

/// The patient's past visits, as ranking needs them.
#[derive(Debug, Default, Clone)]
pub struct History {
    visits_with: HashMap<String, usize>,
    weekdays: [usize; 7],
    parts_of_day: [usize; 3],
    visits: usize,
}

const PARTS_OF_DAY: [&str; 3] = ["morning", "afternoon", "evening"];
const WEEKDAYS: [&str; 7] = [
    "Mondays",
    "Tuesdays",
    "Wednesdays",
    "Thursdays",
    "Fridays",
    "Saturdays",
    "Sundays",
];

fn part_of_day(t: DateTime<Utc>) -> usize {
    match t.hour() {
        0..=11 => 0,
        12..=16 => 1,
        _ => 2,
    }
}

impl History {
    /// Adds a past visit: when it started and the practitioners who took part.
    pub fn visit(&mut self, start: DateTime<Utc>, practitioners: &[String]) {
        self.visits += 1;
        self.weekdays[start.weekday().num_days_from_monday() as usize] += 1;
        self.parts_of_day[part_of_day(start)] += 1;
        for p in practitioners {
            *self.visits_with.entry(p.clone()).or_default() += 1;
        }
    }

    /// The practitioners seen before, most visits first.
    pub fn practitioners(&self) -> Vec<String> {
        let mut seen: Vec<(&String, &usize)> = self.visits_with.iter().collect();
        seen.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        seen.into_iter().map(|(p, _)| p.clone()).collect()
    }
}

/// What the request asks, for scoring.
#[derive(Debug, Clone)]
pub struct Request {
    pub from: DateTime<Utc>,
    pub urgency: Urgency,
    pub routing: Routing,
    pub history: History,
}

/// A candidate with its score and the reasons for it.
#[derive(Debug, Clone)]
pub struct Scored {
    pub candidate: Candidate,
    pub score: f64,
    pub reasons: Vec<String>,
}

/// Scores one candidate (see the module documentation for the parts).
pub fn score(c: &Candidate, r: &Request) -> Scored {
    let mut score = 0.0;
    let mut reasons = Vec::new();
    let mut add = |points: f64, reason: String| {
        let points = (points * 10.0).round() / 10.0;
        score += points;
        reasons.push(format!("+{points}: {reason}"));
    };

    // Specialty.
    if !r.routing.is_empty() {
        let fits = r
            .routing
            .specialties
            .iter()
            .find(|(s, _)| c.specialties.iter().any(|code| code == s.code));
        let general = c.specialties.iter().any(|s| s == GENERAL_PRACTICE.code);
        if let Some((s, why)) = fits {
            add(40.0, format!("{} sees {}", s.display, quoted(why)));
        } else if general && !r.routing.unmatched.is_empty() {
            add(
                40.0,
                format!(
                    "{} is not a symptom the routing table knows: general practice sees it",
                    quoted(&r.routing.unmatched)
                ),
            );
        } else if general {
            add(15.0, "general practice can see any symptom".into());
        }
    }

    // Timing.
    let window = r.urgency.window();
    let ahead = (c.start - r.from).max(Duration::zero());
    if ahead < window {
        let soon = 1.0 - ahead.num_seconds() as f64 / window.num_seconds() as f64;
        add(
            r.urgency.timing_weight() * soon,
            format!(
                "{}: starts {} from the start of the search",
                r.urgency.code(),
                describe(ahead)
            ),
        );
    } else {
        add(
            0.0,
            format!(
                "later than the {} window of {}",
                r.urgency.code(),
                describe(window)
            ),
        );
    }

    // Continuity.
    if let Some(p) = &c.practitioner {
        if let Some(n) = r.history.visits_with.get(p) {
            let plural = if *n == 1 { "visit" } else { "visits" };
            add(20.0, format!("the patient saw {p} before ({n} {plural})"));
        }
    }

    // Habits: a weekday or time of day that at least a third of past visits share.
    let h = &r.history;
    if h.visits >= 2 {
        let day = c.start.weekday().num_days_from_monday() as usize;
        if h.weekdays[day] * 3 >= h.visits {
            add(
                5.0,
                format!("the patient usually comes on {}", WEEKDAYS[day]),
            );
        }
        let part = part_of_day(c.start);
        if h.parts_of_day[part] * 3 >= h.visits {
            add(
                5.0,
                format!("the patient usually comes in the {}", PARTS_OF_DAY[part]),
            );
        }
    }
    Scored {
        candidate: c.clone(),
        score: (score * 10.0_f64).round() / 10.0,
        reasons,
    }
}

/// The best `count` candidates, best first (ties: sooner, then by Slot id).
pub fn rank(candidates: &[Candidate], r: &Request, count: usize) -> Vec<Scored> {
    let mut scored: Vec<Scored> = candidates.iter().map(|c| score(c, r)).collect();
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.candidate.start.cmp(&b.candidate.start))
            .then(a.candidate.slot.cmp(&b.candidate.slot))
    });
    scored.truncate(count);
    scored
}

fn quoted(symptoms: &[String]) -> String {
    symptoms
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(d: Duration) -> String {
    if d.num_hours() < 48 {
        format!("{} h", d.num_hours())
    } else {
        format!("{} days", d.num_days())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn candidate(slot: &str, start: &str, practitioner: &str, specialty: &str) -> Candidate {
        Candidate {
            slot: slot.into(),
            start: at(start),
            end: at(start) + Duration::minutes(30),
            practitioner: Some(practitioner.into()),
            specialties: vec![specialty.into()],
        }
    }

    fn request(urgency: Urgency, symptoms: &[&str]) -> Request {
        Request {
            from: at("2030-01-07T08:00:00Z"),
            urgency,
            routing: route(&symptoms.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            history: History::default(),
        }
    }

    #[test]
    fn symptoms_route_by_word_and_by_code() {
        let r = route(&["Crushing CHEST pain since morning".into()]);
        assert_eq!(r.codes(), vec!["394579002", GENERAL_PRACTICE.code]);
        let r = route(&["http://snomed.info/sct|271807003".into(), "25064002".into()]);
        assert_eq!(
            r.codes(),
            vec!["394582007", "394591006", GENERAL_PRACTICE.code]
        );
        // Whole words only: "rashly" is not "rash".
        let r = route(&["acting rashly".into()]);
        assert_eq!(r.codes(), vec![GENERAL_PRACTICE.code]);
        assert_eq!(r.unmatched, vec!["acting rashly".to_string()]);
        assert!(route(&[" ".into()]).is_empty());
    }

    #[test]
    fn the_fitting_specialty_comes_first_then_general_practice() {
        let r = request(Urgency::Routine, &["palpitations"]);
        let c = [
            candidate(
                "gp",
                "2030-01-07T09:00:00Z",
                "Practitioner/g",
                GENERAL_PRACTICE.code,
            ),
            candidate(
                "derm",
                "2030-01-07T09:00:00Z",
                "Practitioner/d",
                "394582007",
            ),
            candidate(
                "cardio",
                "2030-01-09T09:00:00Z",
                "Practitioner/c",
                "394579002",
            ),
        ];
        let ranked = rank(&c, &r, 10);
        let order: Vec<&str> = ranked.iter().map(|s| s.candidate.slot.as_str()).collect();
        assert_eq!(order, vec!["cardio", "gp", "derm"]);
        assert!(ranked[0].reasons[0].contains("Cardiology sees 'palpitations'"));
    }

    #[test]
    fn urgency_prefers_sooner_and_ends_at_its_window() {
        let r = request(Urgency::Urgent, &[]);
        let soon = score(
            &candidate("a", "2030-01-07T10:00:00Z", "Practitioner/x", "1"),
            &r,
        );
        let later = score(
            &candidate("b", "2030-01-09T10:00:00Z", "Practitioner/x", "1"),
            &r,
        );
        let outside = score(
            &candidate("c", "2030-01-12T10:00:00Z", "Practitioner/x", "1"),
            &r,
        );
        assert!(soon.score > later.score && later.score > outside.score);
        assert_eq!(outside.score, 0.0);
        assert!(outside.reasons[0].contains("later than the urgent window"));
        // Routine gives soonness far less weight than continuity.
        let mut r = request(Urgency::Routine, &[]);
        r.history
            .visit(at("2029-12-01T09:00:00Z"), &["Practitioner/y".into()]);
        let soon = score(
            &candidate("a", "2030-01-07T08:00:00Z", "Practitioner/x", "1"),
            &r,
        );
        let familiar = score(
            &candidate("b", "2030-01-17T09:00:00Z", "Practitioner/y", "1"),
            &r,
        );
        assert!(familiar.score > soon.score);
        assert!(familiar
            .reasons
            .iter()
            .any(|x| x.contains("saw Practitioner/y before (1 visit)")));
    }

    #[test]
    fn habits_need_two_visits_and_a_pattern() {
        let mut r = request(Urgency::Routine, &[]);
        // Two Tuesday-morning visits.
        r.history.visit(at("2029-11-06T09:00:00Z"), &[]);
        let tuesday = candidate("t", "2030-01-08T09:30:00Z", "Practitioner/x", "1");
        assert!(!score(&tuesday, &r)
            .reasons
            .iter()
            .any(|x| x.contains("usually")));
        r.history.visit(at("2029-11-13T10:00:00Z"), &[]);
        let reasons = score(&tuesday, &r).reasons;
        assert!(reasons.iter().any(|x| x.contains("on Tuesdays")));
        assert!(reasons.iter().any(|x| x.contains("in the morning")));
        let friday_evening = candidate("f", "2030-01-11T18:00:00Z", "Practitioner/x", "1");
        assert!(!score(&friday_evening, &r)
            .reasons
            .iter()
            .any(|x| x.contains("usually")));
    }

    #[test]
    fn urgency_codes() {
        assert_eq!(Urgency::parse("stat"), Ok(Urgency::Stat));
        assert!(Urgency::parse("soon").unwrap_err().contains("'soon'"));
    }
}
