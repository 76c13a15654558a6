//! Reading the Prometheus text format (the one Prometheus stores names from).

/// One sample line.
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// Name and labels, sorted: the series' identity (a histogram's `le` as a number).
    pub fn key(&self) -> String {
        let mut labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| match k.as_str() {
                "le" => format!("le={}", super::openmetrics::number(v).unwrap()),
                _ => format!("{k}={v:?}"),
            })
            .collect();
        labels.sort();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| super::openmetrics::sample_line(l).unwrap())
        .collect()
}
