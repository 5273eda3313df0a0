//! Rust types and gRPC stubs generated from `proto/` (packages `cxgap.<service>.v1`),
//! the encoded descriptor set that gRPC reflection serves, and conversions to and from
//! the domain types.

#![allow(missing_debug_implementations, unused_qualifications, clippy::all)]

pub mod cxgap {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("cxgap.common.v1");
        }
    }
    pub mod ingest {
        pub mod v1 {
            tonic::include_proto!("cxgap.ingest.v1");
        }
    }
    pub mod analytics {
        pub mod v1 {
            tonic::include_proto!("cxgap.analytics.v1");
        }
    }
    pub mod alerting {
        pub mod v1 {
            tonic::include_proto!("cxgap.alerting.v1");
        }
    }
    pub mod signals {
        pub mod v1 {
            tonic::include_proto!("cxgap.signals.v1");
        }
    }
}

pub mod convert;

pub use cxgap::{
    alerting::v1 as alerting, analytics::v1 as analytics, common::v1 as common, ingest::v1 as ingest,
    signals::v1 as signals,
};

/// Encoded `FileDescriptorSet` of every cxgap proto file, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cxgap_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn descriptor_set_names_every_service() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("decodes");
        let services: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| format!("{}.{}", f.package(), s.name())))
            .collect();
        for want in [
            "cxgap.ingest.v1.IngestService",
            "cxgap.analytics.v1.AnalyticsService",
            "cxgap.alerting.v1.AlertingService",
        ] {
            assert!(services.iter().any(|s| s == want), "{want} missing from {services:?}");
        }
    }

    #[test]
    fn feedback_event_round_trips() {
        let ev = common::FeedbackEvent {
            event_id: "e-1".into(),
            customer_id: "c-1".into(),
            channel: common::Channel::Chat as i32,
            journey_stage: common::JourneyStage::Support as i32,
            nps: Some(3),
            ratings: vec![common::DimensionRating {
                dimension: common::Dimension::Empathy as i32,
                expectation: 6,
                perception: 3,
            }],
            ..Default::default()
        };
        let back = common::FeedbackEvent::decode(ev.encode_to_vec().as_slice()).unwrap();
        assert_eq!(ev, back);
    }
}
