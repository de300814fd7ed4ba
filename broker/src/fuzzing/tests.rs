//! A stable-toolchain smoke run of the fuzz targets: valid requests and
//! SASL messages, then thousands of random mutations of them.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::{request_frame, sasl};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    let mut out = BytesMut::new();
    header
        .encode(&mut out, key.request_header_version(version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    out.to_vec()
}

/// Valid frames of the APIs a tenant reaches first.
pub fn seeds() -> Vec<Vec<u8>> {
    let topic = TopicName(StrBytes::from_static_str("team-a.orders"));
    vec![
        frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
        frame(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic.clone())),
            ])),
        ),
        frame(
            ApiKey::Produce,
            9,
            &ProduceRequest::default()
                .with_acks(-1)
                .with_topic_data(vec![
                    produce_request::TopicProduceData::default()
                        .with_name(topic.clone())
                        .with_partition_data(vec![
                            produce_request::PartitionProduceData::default()
                                .with_records(Some(Bytes::from_static(&[0u8; 70]))),
                        ]),
                ]),
        ),
        frame(
            ApiKey::Fetch,
            12,
            &FetchRequest::default().with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(topic.clone())
                    .with_partitions(vec![fetch_request::FetchPartition::default()]),
            ]),
        ),
        frame(
            ApiKey::CreateAcls,
            3,
            &CreateAclsRequest::default().with_creations(vec![
                create_acls_request::AclCreation::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("team-a."))
                    .with_resource_pattern_type(4)
                    .with_principal(StrBytes::from_static_str("User:a"))
                    .with_host(StrBytes::from_static_str("*"))
                    .with_operation(2)
                    .with_permission_type(3),
            ]),
        ),
        frame(
            ApiKey::AlterClientQuotas,
            1,
            &AlterClientQuotasRequest::default().with_entries(vec![
                alter_client_quotas_request::EntryData::default()
                    .with_entity(vec![
                        alter_client_quotas_request::EntityData::default()
                            .with_entity_type(StrBytes::from_static_str("tenant"))
                            .with_entity_name(Some(StrBytes::from_static_str("team-a."))),
                    ])
                    .with_ops(vec![
                        alter_client_quotas_request::OpData::default()
                            .with_key(StrBytes::from_static_str("producer_byte_rate"))
                            .with_value(5e6),
                    ]),
            ]),
        ),
        frame(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default()
                .with_auth_bytes(Bytes::from_static(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")),
        ),
        frame(
            ApiKey::JoinGroup,
            9,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("team-a.g")))
                .with_protocol_type(StrBytes::from_static_str("consumer")),
        ),
    ]
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.truncate(i);
            }
            _ if v.len() > 1 => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            _ => {}
        }
    }
    v
}

#[test]
fn seeds_decode() {
    for s in seeds() {
        crate::handlers::decode_request(&s).unwrap();
    }
}

#[test]
fn request_decoder_survives_mutations() {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_f00d);
    for _ in 0..5000 {
        let seed = &seeds[rng.below(seeds.len())];
        request_frame(&mutate(&mut rng, seed));
    }
    for _ in 0..500 {
        let n = rng.below(64);
        let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        request_frame(&junk);
    }
}

#[test]
fn sasl_parsers_survive_mutations() {
    let seeds: Vec<&[u8]> = vec![
        b"\0alice\0secret",
        b"n,,n=alice,r=abcdef\xffc=biws,r=abcdefservernonce,p=dGVzdA==",
        b"n,a=alice,n=alice,r=x\xffc=biws,r=xservernonce,p=",
        b"y,,n=a=2Cb=3Dc,r=nonce,ext=1",
    ];
    let mut rng = Rng(0xc0ff_ee11);
    for s in &seeds {
        sasl(s);
    }
    for _ in 0..3000 {
        let seed = seeds[rng.below(seeds.len())];
        sasl(&mutate(&mut rng, seed));
    }
}
