//! `pinfs timeline`: a trace in the Chrome trace-event JSON format (this crate's, or any
//! with `X` spans, `i` instants, `C` counters and `M` track names) drawn as one
//! self-contained SVG with plotters: a row per track, spans as bars coloured by their name
//! (the lease state), instants as markers, the first counter as a line below, a time axis in
//! seconds since the trace's first event, and a legend.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

/// A span to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The row (index into [`Timeline::rows`]).
    pub row: usize,
    /// Its name (the lease state).
    pub name: String,
    /// Start and end, in microseconds of the trace's clock.
    pub start: f64,
    /// End.
    pub end: f64,
}

/// An instant to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// The row.
    pub row: usize,
    /// Its name.
    pub name: String,
    /// When.
    pub at: f64,
}

/// What a trace file holds, as the drawing needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// The process's name (the title).
    pub title: String,
    /// The rows' names, top first.
    pub rows: Vec<String>,
    /// The spans.
    pub spans: Vec<Span>,
    /// The instants.
    pub marks: Vec<Mark>,
    /// The first counter's name and its values over time.
    pub counter: Option<(String, Vec<(f64, f64)>)>,
}

impl Timeline {
    /// The earliest and latest time of anything drawn.
    fn bounds(&self) -> Option<(f64, f64)> {
        let times = self
            .spans
            .iter()
            .flat_map(|s| [s.start, s.end])
            .chain(self.marks.iter().map(|m| m.at))
            .chain(self.counter.iter().flat_map(|c| c.1.iter().map(|p| p.0)));
        times.fold(None, |b, t| match b {
            None => Some((t, t)),
            Some((lo, hi)) => Some((f64::min(lo, t), f64::max(hi, t))),
        })
    }
}

fn num(e: &Value, key: &str) -> Option<f64> {
    e.get(key)?.as_f64()
}

/// Reads a trace: the JSON Object Format (`{"traceEvents": [...]}`) or the Array Format (a
/// bare array of events). Errors say what is wrong and where.
pub fn parse(text: &str, what: &str) -> Result<Timeline, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "{what}: not JSON ({e}); a trace is what `pinfs status --follow --trace` or `pinfs fuzz --trace` writes"
        )
    })?;
    let events = match &doc {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("traceEvents") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(format!(
                    "{what}: JSON, but not a trace: it has no \"traceEvents\" array"
                ))
            }
        },
        _ => {
            return Err(format!(
                "{what}: JSON, but not a trace: neither an object with \"traceEvents\" nor an array of events"
            ))
        }
    };
    let mut names: HashMap<(u64, u64), String> = HashMap::new();
    let mut sort: HashMap<(u64, u64), i64> = HashMap::new();
    let mut title = String::new();
    let mut used: BTreeSet<(u64, u64)> = BTreeSet::new();
    let key = |e: &Value| {
        (
            e.get("pid").and_then(Value::as_u64).unwrap_or(0),
            e.get("tid").and_then(Value::as_u64).unwrap_or(0),
        )
    };
    for e in events {
        let ph = e.get("ph").and_then(Value::as_str).unwrap_or("");
        let name = e.get("name").and_then(Value::as_str).unwrap_or("");
        match (ph, name) {
            ("M", "process_name") => {
                if let Some(n) = e["args"]["name"].as_str() {
                    title = n.to_string();
                }
            }
            ("M", "thread_name") => {
                if let Some(n) = e["args"]["name"].as_str() {
                    names.insert(key(e), n.to_string());
                }
            }
            ("M", "thread_sort_index") => {
                if let Some(i) = e["args"]["sort_index"].as_i64() {
                    sort.insert(key(e), i);
                }
            }
            ("X" | "i" | "I", _) => {
                used.insert(key(e));
            }
            _ => {}
        }
    }
    let mut order: Vec<(u64, u64)> = used.into_iter().collect();
    order.sort_by_key(|k| (sort.get(k).copied().unwrap_or(i64::MAX), *k));
    let row_of: HashMap<(u64, u64), usize> =
        order.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let mut t = Timeline {
        title,
        rows: order
            .iter()
            .map(|k| {
                names
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| format!("tid {}", k.1))
            })
            .collect(),
        ..Timeline::default()
    };
    let mut counters: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut first_counter = None;
    for (i, e) in events.iter().enumerate() {
        let ph = e.get("ph").and_then(Value::as_str).unwrap_or("");
        let name = e
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let bad = |m: &str| format!("{what}: event {i} ({ph} {name:?}): {m}");
        match ph {
            "X" => {
                let ts = num(e, "ts").ok_or_else(|| bad("no \"ts\" number"))?;
                let dur = num(e, "dur").ok_or_else(|| bad("no \"dur\" number"))?;
                t.spans.push(Span {
                    row: row_of[&key(e)],
                    name,
                    start: ts,
                    end: ts + dur.max(0.0),
                });
            }
            "i" | "I" => {
                let ts = num(e, "ts").ok_or_else(|| bad("no \"ts\" number"))?;
                t.marks.push(Mark {
                    row: row_of[&key(e)],
                    name,
                    at: ts,
                });
            }
            "C" => {
                let ts = num(e, "ts").ok_or_else(|| bad("no \"ts\" number"))?;
                let v = e
                    .get("args")
                    .and_then(Value::as_object)
                    .and_then(|a| a.values().find_map(Value::as_f64))
                    .ok_or_else(|| bad("no numeric value in \"args\""))?;
                first_counter.get_or_insert_with(|| name.clone());
                counters.entry(name).or_default().push((ts, v));
            }
            _ => {}
        }
    }
    if let Some(name) = first_counter {
        let mut values = counters.remove(&name).unwrap_or_default();
        values.sort_by(|a, b| a.0.total_cmp(&b.0));
        t.counter = Some((name, values));
    }
    if t.spans.is_empty() && t.marks.is_empty() && t.counter.is_none() {
        return Err(format!(
            "{what}: a trace with nothing to draw (no spans, instants or counters); follow a mount while something happens on it"
        ));
    }
    Ok(t)
}

/// Reads the trace file `path`.
pub fn read(path: &Path) -> Result<Timeline, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: cannot read the trace: {e}; give a file written by `pinfs status --follow --trace`",
            path.display()
        )
    })?;
    parse(&text, &path.display().to_string())
}

/// The colour of a span named `name` (lease states have fixed ones).
pub fn span_colour(name: &str) -> RGBColor {
    match name {
        "granted" => RGBColor(46, 160, 67),
        "breaking" => RGBColor(240, 150, 20),
        "revoked" => RGBColor(200, 40, 40),
        "connected" => RGBColor(70, 130, 180),
        "recalling" => RGBColor(240, 190, 60),
        "recall_ignored" => RGBColor(150, 30, 90),
        other => picked(other),
    }
}

/// A colour of the palette for a name outside the fixed ones (the same name, the same one).
fn picked(name: &str) -> RGBColor {
    let (r, g, b) = Palette99::pick(name.bytes().map(usize::from).sum()).rgb();
    RGBColor(r, g, b)
}

/// How an instant named `name` is marked: its colour and shape.
fn mark_style(name: &str) -> (RGBColor, Shape) {
    match name {
        "break" => (RGBColor(240, 150, 20), Shape::Triangle),
        "deadline" => (RGBColor(120, 60, 170), Shape::Cross),
        "refused" => (RGBColor(30, 90, 200), Shape::Circle),
        "revoked" => (RGBColor(200, 40, 40), Shape::Triangle),
        "released" => (RGBColor(46, 160, 67), Shape::Circle),
        "fenced" => (BLACK, Shape::Cross),
        "holder_gone" => (RGBColor(110, 110, 110), Shape::Circle),
        "recall" => (RGBColor(240, 190, 60), Shape::Triangle),
        "ack" => (RGBColor(46, 160, 67), Shape::Triangle),
        "recall_ignored" => (RGBColor(150, 30, 90), Shape::Cross),
        "peer_gone" => (RGBColor(110, 110, 110), Shape::Cross),
        other => (picked(other), Shape::Circle),
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Triangle,
    Cross,
    Circle,
}

/// Pixels of one row, of the counter's panel, of the legend's column, and the whole width.
const ROW: u32 = 44;
const COUNTER: u32 = 220;
const LEGEND: u32 = 200;
const WIDTH: u32 = 1400;

type Failure = Box<dyn std::error::Error>;

/// Draws `t` as an SVG document (returned as text).
pub fn render(t: &Timeline) -> Result<String, String> {
    let mut svg = String::new();
    draw(t, &mut svg).map_err(|e| format!("drawing the timeline: {e}"))?;
    Ok(svg)
}

/// The legend's entries: what each colour and marker means.
enum Entry {
    Span(String),
    Mark(String),
    Line(String),
}

fn axis_font() -> TextStyle<'static> {
    ("sans-serif", 13).into_font().color(&BLACK)
}

fn draw(t: &Timeline, svg: &mut String) -> Result<(), Failure> {
    let (lo, hi) = t.bounds().ok_or("nothing to draw")?;
    // Seconds since the first event; at least a millisecond wide.
    let secs = |us: f64| (us - lo) / 1e6;
    let span = secs(hi).max(0.001) * 1.03;
    let rows = t.rows.len().max(1) as u32;
    let label_w = t
        .rows
        .iter()
        .map(|r| r.chars().count() as u32 * 8 + 16)
        .max()
        .unwrap_or(60)
        .clamp(60, 360);
    let mut states: Vec<&str> = t.spans.iter().map(|s| s.name.as_str()).collect();
    states.sort();
    states.dedup();
    let mut kinds: Vec<&str> = t.marks.iter().map(|m| m.name.as_str()).collect();
    kinds.sort();
    kinds.dedup();
    let legend: Vec<Entry> = states
        .iter()
        .map(|s| Entry::Span(s.to_string()))
        .chain(kinds.iter().map(|k| Entry::Mark(k.to_string())))
        .chain(t.counter.iter().map(|c| Entry::Line(c.0.replace('_', " "))))
        .collect();
    let top_h = 110 + ROW * rows;
    let counter_h = if t.counter.is_some() { COUNTER } else { 0 };
    let height = (top_h + counter_h).max(70 + 22 * legend.len() as u32);
    let root = SVGBackend::with_string(svg, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = if t.title.is_empty() {
        "lease timeline".to_string()
    } else {
        format!("lease timeline: {}", t.title)
    };
    let root = root.titled(&title, ("sans-serif", 20))?;
    let (main, side) = root.split_horizontally(WIDTH - LEGEND);
    let (top, bottom) = main.split_vertically(top_h - 30);
    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(label_w)
        .build_cartesian_2d(0f64..span, 0f64..f64::from(rows))?;
    // The first row on top: row r spans r..r + 1 counted from the top.
    let row_at = |r: usize| f64::from(rows - 1 - r as u32);
    chart
        .configure_mesh()
        .y_labels(rows as usize + 1)
        .y_label_formatter(&|_| String::new())
        .disable_y_mesh()
        .x_desc("seconds since the first event")
        .x_label_formatter(&|x| format!("{x:.3}"))
        .label_style(axis_font())
        .axis_desc_style(axis_font())
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;
    // Each row's name left of it, and a line between rows.
    let (base_x, base_y) = top.get_base_pixel();
    let right = axis_font().pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Right,
        plotters::style::text_anchor::VPos::Center,
    ));
    for (r, name) in t.rows.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(0.0, row_at(r) + 0.5));
        top.draw(&Text::new(
            name.clone(),
            (x - base_x - 8, y - base_y),
            right.clone(),
        ))?;
        chart.draw_series(std::iter::once(PathElement::new(
            [(0.0, row_at(r)), (span, row_at(r))],
            RGBColor(210, 210, 210),
        )))?;
    }
    for &state in &states {
        let colour = span_colour(state);
        chart.draw_series(t.spans.iter().filter(|s| s.name == state).map(|s| {
            let mut r = Rectangle::new(
                [
                    (secs(s.start), row_at(s.row)),
                    (secs(s.end), row_at(s.row) + 1.0),
                ],
                colour.mix(0.85).filled(),
            );
            r.set_margin(8, 8, 0, 0);
            r
        }))?;
    }
    for &kind in &kinds {
        let (colour, shape) = mark_style(kind);
        let at = t
            .marks
            .iter()
            .filter(|m| m.name == kind)
            .map(|m| (secs(m.at), row_at(m.row) + 0.5));
        let (fill, line) = (colour.filled(), colour.stroke_width(2));
        match shape {
            Shape::Triangle => chart.draw_series(at.map(|p| TriangleMarker::new(p, 7, fill)))?,
            Shape::Cross => chart.draw_series(at.map(|p| Cross::new(p, 6, line)))?,
            Shape::Circle => chart.draw_series(at.map(|p| Circle::new(p, 5, fill)))?,
        };
    }
    if let Some((name, values)) = &t.counter {
        let max = values.iter().map(|v| v.1).fold(1.0, f64::max) * 1.15;
        let mut c = ChartBuilder::on(&bottom)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(label_w)
            .build_cartesian_2d(0f64..span, 0f64..max)?;
        c.configure_mesh()
            .x_desc("seconds since the first event")
            .x_label_formatter(&|x| format!("{x:.3}"))
            .y_desc(name.replace('_', " "))
            .label_style(axis_font())
            .axis_desc_style(axis_font())
            .light_line_style(RGBColor(238, 238, 238))
            .draw()?;
        // A counter holds its value until the next one: a step line, to the end.
        let mut steps = Vec::new();
        for (i, &(ts, v)) in values.iter().enumerate() {
            if i > 0 {
                steps.push((secs(ts), values[i - 1].1));
            }
            steps.push((secs(ts), v));
        }
        if let Some(&(_, v)) = values.last() {
            steps.push((secs(hi), v));
        }
        c.draw_series(LineSeries::new(steps, COUNTER_COLOUR.stroke_width(2)))?;
    }
    draw_legend(&side, &legend)?;
    root.present()?;
    Ok(())
}

const COUNTER_COLOUR: RGBColor = RGBColor(30, 90, 200);

/// The legend, in a column of its own beside the plots (so it never hides a bar).
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[Entry],
) -> Result<(), Failure>
where
    DB::ErrorType: 'static,
{
    let font = ("sans-serif", 14).into_font();
    area.draw(&Text::new(
        "legend",
        (12, 16),
        font.clone().style(FontStyle::Bold),
    ))?;
    for (i, e) in entries.iter().enumerate() {
        let y = 46 + 22 * i as i32;
        let text = match e {
            Entry::Span(s) => {
                area.draw(&Rectangle::new(
                    [(12, y - 6), (36, y + 6)],
                    span_colour(s).filled(),
                ))?;
                format!("{s} (lease state)")
            }
            Entry::Mark(m) => {
                let (colour, shape) = mark_style(m);
                let at = (24, y);
                match shape {
                    Shape::Triangle => area.draw(&TriangleMarker::new(at, 7, colour.filled()))?,
                    Shape::Cross => area.draw(&Cross::new(at, 6, colour.stroke_width(2)))?,
                    Shape::Circle => area.draw(&Circle::new(at, 5, colour.filled()))?,
                }
                m.clone()
            }
            Entry::Line(l) => {
                area.draw(&PathElement::new(
                    [(12, y), (36, y)],
                    COUNTER_COLOUR.stroke_width(2),
                ))?;
                l.clone()
            }
        };
        area.draw(&Text::new(
            text,
            (44, y),
            TextStyle::from(font.clone()).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Left,
                plotters::style::text_anchor::VPos::Center,
            )),
        ))?;
    }
    Ok(())
}

/// Runs `pinfs timeline FILE -o OUT`: reads the trace, draws it, writes the SVG.
pub fn timeline_command(trace: &Path, out: &Path) -> Result<(), String> {
    let t = read(trace)?;
    let svg = render(&t)?;
    std::fs::write(out, svg).map_err(|e| {
        format!(
            "{}: cannot write the SVG: {e}; give -o a path in a writable directory",
            out.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = r#"{"displayTimeUnit":"ms","traceEvents":[
        {"ph":"M","name":"process_name","pid":1,"tid":0,"args":{"name":"pinfs /m"}},
        {"ph":"M","name":"thread_name","pid":1,"tid":1,"args":{"name":"holder 1"}},
        {"ph":"M","name":"thread_name","pid":1,"tid":2,"args":{"name":"holder 2"}},
        {"ph":"M","name":"thread_sort_index","pid":1,"tid":2,"args":{"sort_index":1}},
        {"ph":"M","name":"thread_sort_index","pid":1,"tid":1,"args":{"sort_index":2}},
        {"ph":"X","name":"granted","pid":1,"tid":1,"ts":1000,"dur":500},
        {"ph":"X","name":"breaking","pid":1,"tid":1,"ts":1500,"dur":100},
        {"ph":"i","s":"t","name":"break","pid":1,"tid":1,"ts":1500},
        {"ph":"X","name":"granted","pid":1,"tid":2,"ts":1200,"dur":50},
        {"ph":"C","name":"busy_blocks","pid":1,"tid":0,"ts":1600,"args":{"blocks":3}}
    ]}"#;

    /// The rows follow the tracks' sort indexes; spans, instants and the counter are read.
    #[test]
    fn a_trace_is_read_into_rows_spans_marks_and_a_counter() {
        let t = parse(TRACE, "t.json").unwrap();
        assert_eq!(t.title, "pinfs /m");
        assert_eq!(t.rows, vec!["holder 2", "holder 1"]);
        assert_eq!(t.spans.len(), 3);
        assert_eq!(t.spans[0].row, 1);
        assert_eq!((t.spans[0].start, t.spans[0].end), (1000.0, 1500.0));
        assert_eq!(
            t.marks,
            vec![Mark {
                row: 1,
                name: "break".into(),
                at: 1500.0
            }]
        );
        assert_eq!(t.counter, Some(("busy_blocks".into(), vec![(1600.0, 3.0)])));
        let svg = render(&t).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("holder 1") && svg.contains("busy blocks"));
    }

    /// Bad input is named, with where and what to do.
    #[test]
    fn bad_traces_get_clear_errors() {
        let e = parse("{\"traceEvents\": [", "t.json").unwrap_err();
        assert!(e.starts_with("t.json: not JSON (EOF while parsing"), "{e}");
        let e = parse("{\"a\": 1}", "t.json").unwrap_err();
        assert!(e.contains("no \"traceEvents\" array"), "{e}");
        let e = parse("{\"traceEvents\": []}", "t.json").unwrap_err();
        assert!(e.contains("nothing to draw"), "{e}");
        let e = parse(r#"[{"ph":"X","name":"granted","tid":1,"ts":1}]"#, "t.json").unwrap_err();
        assert_eq!(e, "t.json: event 0 (X \"granted\"): no \"dur\" number");
        let e = read(Path::new("/nonexistent/t.json")).unwrap_err();
        assert!(
            e.starts_with("/nonexistent/t.json: cannot read the trace: No such file"),
            "{e}"
        );
    }
}
