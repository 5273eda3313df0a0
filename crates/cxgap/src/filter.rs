//! `--channel`, `--stage`, `--touchpoint` and `--segment`: the report filter of the query
//! API, for the client commands and the offline analyser alike, checked on the command
//! line so a misspelt name is an error naming the allowed ones, not an empty report.

use cxgap_domain::report::Filter;
use cxgap_domain::{Channel, JourneyStage};
use cxgap_proto::analytics as pb;
use cxgap_proto::convert::{channel_to_pb, stage_to_pb};

#[derive(Debug, Default, Clone, clap::Args)]
pub struct FilterArgs {
    /// Only feedback from these channels, comma-separated (e.g. web,mobile_app).
    #[arg(long = "channel", value_delimiter = ',', value_parser = parse_channel)]
    channels: Vec<Channel>,
    /// Only feedback at these journey stages, comma-separated.
    #[arg(long = "stage", value_delimiter = ',', value_parser = parse_stage)]
    stages: Vec<JourneyStage>,
    /// Only feedback at these touchpoints, comma-separated.
    #[arg(long = "touchpoint", value_delimiter = ',')]
    touchpoints: Vec<String>,
    #[command(flatten)]
    segment: SegmentArgs,
}

/// The at-risk list's filter: it selects customers, whose records keep the channels and
/// journey stages of their feedback and their latest segment, not touchpoints.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct CustomerFilterArgs {
    /// Only customers who gave feedback through any of these channels, comma-separated.
    #[arg(long = "channel", value_delimiter = ',', value_parser = parse_channel)]
    channels: Vec<Channel>,
    /// Only customers who touched any of these journey stages, comma-separated.
    #[arg(long = "stage", value_delimiter = ',', value_parser = parse_stage)]
    stages: Vec<JourneyStage>,
    #[command(flatten)]
    segment: SegmentArgs,
}

impl CustomerFilterArgs {
    /// `None` when nothing is filtered, as the service reads an absent filter.
    pub fn pb(&self) -> anyhow::Result<Option<pb::Filter>> {
        let segment = self.segment.pairs()?;
        if self.channels.is_empty() && self.stages.is_empty() && segment.is_empty() {
            return Ok(None);
        }
        Ok(Some(pb::Filter {
            channels: self.channels.iter().copied().map(channel_to_pb).collect(),
            journey_stages: self.stages.iter().copied().map(stage_to_pb).collect(),
            touchpoints: Vec::new(),
            segment: segment.into_iter().collect(),
        }))
    }
}

/// The segment part of a filter.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct SegmentArgs {
    /// Only customers whose segment attribute KEY is VALUE (KEY=VALUE); repeat for several
    /// attributes, all of which must match.
    #[arg(long = "segment", value_parser = parse_segment)]
    segment: Vec<(String, String)>,
}

fn parse_channel(s: &str) -> Result<Channel, String> {
    Channel::parse(s).ok_or_else(|| format!("{s:?} is not a channel ({})", Channel::allowed().to_lowercase()))
}

fn parse_stage(s: &str) -> Result<JourneyStage, String> {
    JourneyStage::parse(s)
        .ok_or_else(|| format!("{s:?} is not a journey stage ({})", JourneyStage::allowed().to_lowercase()))
}

fn parse_segment(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE (e.g. tier=gold)")),
    }
}

impl SegmentArgs {
    /// The pairs, refusing one attribute asked twice: no customer has two values of it,
    /// so the answer would be empty without saying why.
    fn pairs(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut seen = std::collections::BTreeSet::new();
        for (k, _) in &self.segment {
            anyhow::ensure!(seen.insert(k), "--segment names {k:?} twice; a customer has one value of it");
        }
        Ok(self.segment.clone())
    }
}

impl FilterArgs {
    pub fn domain(&self) -> anyhow::Result<Filter> {
        Ok(Filter {
            channels: self.channels.clone(),
            journey_stages: self.stages.clone(),
            touchpoints: self.touchpoints.clone(),
            segment: self.segment.pairs()?,
        })
    }

    /// `None` when nothing is filtered, as the service reads an absent filter.
    pub fn pb(&self) -> anyhow::Result<Option<pb::Filter>> {
        let f = self.domain()?;
        if f == Filter::default() {
            return Ok(None);
        }
        Ok(Some(pb::Filter {
            channels: f.channels.into_iter().map(channel_to_pb).collect(),
            journey_stages: f.journey_stages.into_iter().map(stage_to_pb).collect(),
            touchpoints: f.touchpoints,
            segment: f.segment.into_iter().collect(),
        }))
    }
}

/// The filter in words ("channel WEB, CHAT; segment tier=gold"), `None` when it passes all.
pub fn describe(f: &Filter) -> Option<String> {
    let mut parts = Vec::new();
    let list = |items: Vec<String>| items.join(", ");
    if !f.channels.is_empty() {
        parts.push(format!("channel {}", list(f.channels.iter().map(|c| c.to_string()).collect())));
    }
    if !f.journey_stages.is_empty() {
        parts.push(format!("stage {}", list(f.journey_stages.iter().map(|s| s.to_string()).collect())));
    }
    if !f.touchpoints.is_empty() {
        parts.push(format!("touchpoint {}", list(f.touchpoints.clone())));
    }
    if !f.segment.is_empty() {
        parts.push(format!("segment {}", list(f.segment.iter().map(|(k, v)| format!("{k}={v}")).collect())));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        filter: FilterArgs,
    }

    fn parse(args: &[&str]) -> Result<FilterArgs, String> {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map(|c| c.filter)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flags_become_the_services_filter() {
        let f = parse(&["--channel", "web,MOBILE-APP", "--stage", "support", "--touchpoint", "helpline"]).unwrap();
        let f = parse(&["--segment", "tier=gold", "--segment", "region=emea"])
            .map(|s| FilterArgs { segment: s.segment, ..f })
            .unwrap();
        let d = f.domain().unwrap();
        assert_eq!(d.channels, [Channel::Web, Channel::MobileApp]);
        assert_eq!(d.journey_stages, [JourneyStage::Support]);
        assert_eq!(d.touchpoints, ["helpline"]);
        let p = f.pb().unwrap().unwrap();
        assert_eq!(p.channels, [channel_to_pb(Channel::Web), channel_to_pb(Channel::MobileApp)]);
        assert_eq!(p.journey_stages, [stage_to_pb(JourneyStage::Support)]);
        assert_eq!(p.segment.get("region").map(String::as_str), Some("emea"));
        assert_eq!(parse(&[]).unwrap().pb().unwrap(), None, "no flags, no filter");
        assert_eq!(
            describe(&d).as_deref(),
            Some("channel WEB, MOBILE_APP; stage SUPPORT; touchpoint helpline; segment tier=gold, region=emea")
        );
        assert_eq!(describe(&Filter::default()), None);
    }

    #[test]
    fn bad_flags_name_what_is_wrong() {
        let e = parse(&["--channel", "web,pigeon"]).unwrap_err();
        assert!(e.contains("\"pigeon\" is not a channel") && e.contains("mobile_app"), "{e}");
        let e = parse(&["--stage", "lunch"]).unwrap_err();
        assert!(e.contains("\"lunch\" is not a journey stage"), "{e}");
        let e = parse(&["--segment", "gold"]).unwrap_err();
        assert!(e.contains("\"gold\" is not KEY=VALUE"), "{e}");
        let twice = parse(&["--segment", "tier=gold", "--segment", "tier=silver"]).unwrap();
        let e = twice.domain().unwrap_err().to_string();
        assert!(e.contains("\"tier\" twice"), "{e}");
    }

    #[derive(Debug, Parser)]
    struct AtRisk {
        #[command(flatten)]
        customers: CustomerFilterArgs,
    }

    #[test]
    fn the_at_risk_flags_are_channels_stages_and_segment_without_touchpoints() {
        let parse = |args: &[&str]| AtRisk::try_parse_from(std::iter::once("t").chain(args.iter().copied()));
        assert_eq!(parse(&[]).unwrap().customers.pb().unwrap(), None, "nothing filtered: no filter sent");
        let a = parse(&["--channel", "phone,chat", "--stage", "support", "--segment", "tier=gold"]).unwrap();
        let p = a.customers.pb().unwrap().unwrap();
        assert_eq!(p.channels, [channel_to_pb(Channel::Phone), channel_to_pb(Channel::Chat)]);
        assert_eq!(p.journey_stages, [stage_to_pb(JourneyStage::Support)]);
        assert_eq!(p.segment.get("tier").map(String::as_str), Some("gold"));
        assert!(p.touchpoints.is_empty());
        let e = parse(&["--touchpoint", "helpline"]).unwrap_err().to_string();
        assert!(e.contains("--touchpoint"), "not a flag of the at-risk list: {e}");
    }
}
