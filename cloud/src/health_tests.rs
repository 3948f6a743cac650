//! The health-check annotations: examples of each rule, and properties over any value.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::ens::EnsProfile;
use crate::model::Protocol;

const SVC: &str = "web/cube";

fn parse(pairs: &[(&str, &str)]) -> Result<HealthCheck, PlanError> {
    let a: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    from_annotations(&EnsProfile, SVC, &a)
}

/// The error's annotation and reason, after checking it names the Service and the value.
fn refused(pairs: &[(&str, &str)]) -> (String, String) {
    match parse(pairs) {
        Err(PlanError::BadServiceAnnotation {
            service,
            annotation,
            value,
            why,
        }) => {
            assert_eq!(service, SVC);
            assert!(pairs.iter().any(|(k, v)| *k == annotation && *v == value));
            (annotation, why)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn absent_annotations_give_the_ens_defaults() {
    let h = parse(&[]).unwrap();
    assert_eq!(
        h,
        HealthCheck {
            healthy_threshold: 3,
            unhealthy_threshold: 3,
            connect_timeout: 5,
            interval: 2,
            connect_port: None,
            http: None,
        }
    );
    assert_eq!(
        h.to_string(),
        "tcp every 2s timeout 5s healthy 3 unhealthy 3"
    );
}

#[test]
fn every_numeric_annotation_is_read() {
    let h = parse(&[
        (ANNOTATION_HEALTHY_THRESHOLD, "4"),
        (ANNOTATION_UNHEALTHY_THRESHOLD, "10"),
        (ANNOTATION_HEALTH_CHECK_CONNECT_TIMEOUT, "300"),
        (ANNOTATION_HEALTH_CHECK_INTERVAL, "1"),
        (ANNOTATION_HEALTH_CHECK_CONNECT_PORT, "8080"),
        (ANNOTATION_HEALTH_CHECK_FLAG, "on"),
        (ANNOTATION_HEALTH_CHECK_SWITCH, "on"),
    ])
    .unwrap();
    assert_eq!(
        (
            h.healthy_threshold,
            h.unhealthy_threshold,
            h.connect_timeout,
            h.interval,
            h.port_for(30080)
        ),
        (4, 10, 300, 1, 8080)
    );
}

#[test]
fn an_http_check_takes_domain_uri_and_status_classes_and_udp_listeners_drop_it() {
    let h = parse(&[
        (ANNOTATION_HEALTH_CHECK_TYPE, "http"),
        (ANNOTATION_HEALTH_CHECK_DOMAIN, "cube.example.com"),
        (ANNOTATION_HEALTH_CHECK_URI, "/status/healthz.html?full&v"),
        (ANNOTATION_HEALTH_CHECK_HTTP_CODE, "http_2xx,http_3xx"),
    ])
    .unwrap();
    let http = h.http.clone().unwrap();
    assert_eq!(http.domain.as_deref(), Some("cube.example.com"));
    assert_eq!(http.uri.as_deref(), Some("/status/healthz.html?full&v"));
    assert_eq!(http.http_codes, "http_2xx,http_3xx");
    assert_eq!(for_protocol(&h, Protocol::Tcp), h);
    assert_eq!(for_protocol(&h, Protocol::Udp).http, None);
    // Without a status class: http_2xx, as ENS.
    let h = parse(&[(ANNOTATION_HEALTH_CHECK_TYPE, "http")]).unwrap();
    assert_eq!(h.http.unwrap().http_codes, "http_2xx");
}

#[test]
fn bad_values_are_refused_naming_service_annotation_and_range() {
    let (a, why) = refused(&[(ANNOTATION_HEALTHY_THRESHOLD, "1")]);
    assert_eq!(a, ANNOTATION_HEALTHY_THRESHOLD);
    assert!(why.contains("from 2 to 10"), "{why}");
    let (_, why) = refused(&[(ANNOTATION_HEALTH_CHECK_INTERVAL, "51")]);
    assert!(why.contains("seconds from 1 to 50"), "{why}");
    let (_, why) = refused(&[(ANNOTATION_HEALTH_CHECK_CONNECT_TIMEOUT, "five")]);
    assert!(why.contains("from 1 to 300"), "{why}");
    refused(&[(ANNOTATION_HEALTH_CHECK_CONNECT_PORT, "0")]);
    refused(&[(ANNOTATION_HEALTH_CHECK_CONNECT_PORT, "65536")]);
    refused(&[(ANNOTATION_UNHEALTHY_THRESHOLD, " 3")]);
    refused(&[(ANNOTATION_HEALTH_CHECK_TYPE, "HTTP2")]);
    let (_, why) = refused(&[(ANNOTATION_HEALTH_CHECK_SWITCH, "off")]);
    assert!(why.contains("always run a health check"), "{why}");
    refused(&[(ANNOTATION_HEALTH_CHECK_FLAG, "off")]);
    // HTTP fields without an HTTP check.
    let (a, why) = refused(&[(ANNOTATION_HEALTH_CHECK_URI, "/healthz")]);
    assert_eq!(a, ANNOTATION_HEALTH_CHECK_URI);
    assert!(why.contains("only with"), "{why}");
    let http = (ANNOTATION_HEALTH_CHECK_TYPE, "http");
    for uri in [
        "healthz",
        "/",
        "//",
        "/a b",
        &format!("/{}", "a".repeat(80)),
    ] {
        refused(&[http, (ANNOTATION_HEALTH_CHECK_URI, uri)]);
    }
    for domain in ["", "a_b.example", &"a".repeat(81)] {
        refused(&[http, (ANNOTATION_HEALTH_CHECK_DOMAIN, domain)]);
    }
    for codes in ["http_2xx,http_2xx", "200", "", "http_2xx,"] {
        refused(&[http, (ANNOTATION_HEALTH_CHECK_HTTP_CODE, codes)]);
    }
    assert!(parse(&[http, (ANNOTATION_HEALTH_CHECK_DOMAIN, "$_ip")]).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_number_is_taken_exactly_when_in_the_documented_range(
        which in 0usize..4, n in 0u64..400,
    ) {
        let (annotation, lo, hi) = [
            (ANNOTATION_HEALTHY_THRESHOLD, 2, 10),
            (ANNOTATION_UNHEALTHY_THRESHOLD, 2, 10),
            (ANNOTATION_HEALTH_CHECK_CONNECT_TIMEOUT, 1, 300),
            (ANNOTATION_HEALTH_CHECK_INTERVAL, 1, 50),
        ][which];
        let v = n.to_string();
        let r = parse(&[(annotation, &v)]);
        if (lo..=hi).contains(&n) {
            let h = r.unwrap();
            let got = [h.healthy_threshold, h.unhealthy_threshold, h.connect_timeout, h.interval][which];
            prop_assert_eq!(u64::from(got), n);
        } else {
            let named = matches!(&r, Err(PlanError::BadServiceAnnotation { annotation: a, .. }) if a == annotation);
            prop_assert!(named, "{:?}", r);
        }
    }

    #[test]
    fn any_value_of_any_health_annotation_is_taken_or_refused_by_name(
        which in 0usize..ANNOTATIONS.len(), v in ".{0,90}", http in any::<bool>(),
    ) {
        let annotation = ANNOTATIONS[which];
        let mut pairs = vec![(annotation, v.as_str())];
        if http && annotation != ANNOTATION_HEALTH_CHECK_TYPE {
            pairs.push((ANNOTATION_HEALTH_CHECK_TYPE, "http"));
        }
        match parse(&pairs) {
            Ok(_) => {}
            Err(PlanError::BadServiceAnnotation { service, annotation: a, value, .. }) => {
                prop_assert_eq!(service, SVC);
                prop_assert_eq!(a, annotation);
                prop_assert_eq!(value, v);
            }
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }
}
