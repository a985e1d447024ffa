//! Every counter form ProxySmart is known (or feared) to print, and garbage.

use super::*;
use serde_json::json;

#[test]
fn decimal_units_as_proxysmart_prints_them() {
    assert_eq!(human_bytes("21.1 GB"), Some(21_100_000_000));
    assert_eq!(human_bytes("512 B"), Some(512));
    assert_eq!(human_bytes("0 B"), Some(0));
    assert_eq!(human_bytes("1.2 KB"), Some(1_200));
    assert_eq!(human_bytes("999.9 MB"), Some(999_900_000));
    assert_eq!(human_bytes("3 TB"), Some(3_000_000_000_000));
    assert_eq!(human_bytes("1.5 PB"), Some(1_500_000_000_000_000));
}

#[test]
fn odd_spellings_of_units() {
    assert_eq!(human_bytes("1.2KB"), Some(1_200), "no space");
    assert_eq!(human_bytes("3 mb"), Some(3_000_000), "lower case");
    assert_eq!(human_bytes("3 Mb"), Some(3_000_000));
    assert_eq!(human_bytes("  7 gB  "), Some(7_000_000_000), "padding");
    assert_eq!(human_bytes("5 k"), Some(5_000), "bare prefix");
    assert_eq!(human_bytes("5G"), Some(5_000_000_000));
    assert_eq!(human_bytes("10 bytes"), Some(10));
    assert_eq!(human_bytes("1 byte"), Some(1));
}

#[test]
fn binary_units() {
    assert_eq!(human_bytes("1 KiB"), Some(1_024));
    assert_eq!(human_bytes("1.5 MiB"), Some(1_572_864));
    assert_eq!(human_bytes("2 gib"), Some(2_147_483_648));
    assert_eq!(human_bytes("1 TiB"), Some(1_099_511_627_776));
    assert_eq!(human_bytes("1 PiB"), Some(1_125_899_906_842_624));
}

#[test]
fn commas_and_plain_numbers() {
    assert_eq!(
        human_bytes("21,1 GB"),
        Some(21_100_000_000),
        "decimal comma"
    );
    assert_eq!(human_bytes("0,25 MB"), Some(250_000));
    assert_eq!(human_bytes("1,234 B"), Some(1_234), "thousands");
    assert_eq!(human_bytes("1,234,567"), Some(1_234_567));
    assert_eq!(human_bytes("1,234.5 KB"), Some(1_234_500));
    assert_eq!(human_bytes("12345"), Some(12_345));
    assert_eq!(
        human_bytes("12345.6"),
        Some(12_346),
        "rounded to whole bytes"
    );
}

#[test]
fn json_values() {
    assert_eq!(counter(&json!(null)), Ok(None));
    assert_eq!(counter(&json!(0)), Ok(Some(0)));
    assert_eq!(counter(&json!(12345)), Ok(Some(12_345)));
    assert_eq!(counter(&json!(1.5e3)), Ok(Some(1_500)));
    assert_eq!(counter(&json!("21.1 GB")), Ok(Some(21_100_000_000)));
    assert_eq!(counter(&json!("0")), Ok(Some(0)));
    for none in ["", "  ", "-", "n/a", "N/A", "null"] {
        assert_eq!(counter(&json!(none)), Ok(None), "{none:?}");
    }
}

#[test]
fn garbage_is_an_error_that_quotes_a_short_value() {
    for bad in [
        "lots",
        "GB",
        "-5 MB",
        "1.2.3 GB",
        "5 GBs",
        "5 furlongs",
        ",5 GB",
        ".5 GB",
        "1,2345 B",
        "12,34,56",
        "1e3",
        "NaN",
        "inf GB",
        "99999999999 PB",
    ] {
        assert_eq!(human_bytes(bad), None, "{bad:?}");
        assert!(counter(&json!(bad)).is_err(), "{bad:?}");
    }
    for bad in [
        json!(-5),
        json!(-0.5),
        json!(true),
        json!([1]),
        json!({"GB": 1}),
    ] {
        assert!(counter(&bad).is_err(), "{bad}");
    }
    let long = "x".repeat(10_000);
    let e = counter(&json!(long)).unwrap_err();
    assert!(e.shown.len() <= 40, "{}", e.shown);
}

#[test]
fn a_port_entry_keeps_its_good_values_when_one_is_bad() {
    let entry = json!({"port": "8001", "portName": "farmhand-al",
        "bandwidth_bytes_day_in": "1.5 MB", "bandwidth_bytes_day_out": "garbage",
        "bandwidth_bytes_month_in": "9 GB"});
    let (counters, unreadable) = port_counters(&entry);
    assert_eq!(
        counters,
        PortCounters {
            bytes_in: Some(1_500_000),
            bytes_out: None,
        }
    );
    assert_eq!(
        unreadable,
        [(
            OUT_KEY,
            BadCounter {
                shown: "\"garbage\"".into()
            }
        )]
    );
    // No reading (null) is not unreadable.
    let idle = json!({"bandwidth_bytes_day_in": 0, "bandwidth_bytes_day_out": null});
    assert_eq!(
        port_counters(&idle),
        (
            PortCounters {
                bytes_in: Some(0),
                bytes_out: None,
            },
            vec![]
        )
    );
    assert_eq!(
        port_counters(&json!("not an object")),
        (PortCounters::default(), vec![])
    );
}

#[test]
fn lifetime_totals_are_preferred_and_kept_once_a_box_has_them() {
    let field = serde_json::json!({
        "bandwidth_bytes_day_in": 0, "bandwidth_bytes_day_out": "1.0 KB",
        "bandwidth_bytes_prevmonth_in": null,
        "bandwidth_bytes_lifetime_in": "21.1 GB", "bandwidth_bytes_lifetime_out": "2 MB"
    });
    let (c, bad) = port_counters(&field);
    assert_eq!(
        (c.bytes_in, c.bytes_out),
        (Some(21_100_000_000), Some(2_000_000))
    );
    assert!(bad.is_empty());
    // Around the reset a lifetime total may read null: no reading this round, never a
    // switch to the day counter (which the meter would take for a reset).
    let nulls = serde_json::json!({"bandwidth_bytes_day_in": "5 MB", "bandwidth_bytes_day_out": "5 MB",
        "bandwidth_bytes_lifetime_in": null, "bandwidth_bytes_lifetime_out": null});
    let (c, _) = port_counters(&nulls);
    assert_eq!((c.bytes_in, c.bytes_out), (None, None));
    let short = serde_json::json!({"lifetime_in": "3 KB", "lifetime_out": 0});
    let (c, _) = port_counters(&short);
    assert_eq!((c.bytes_in, c.bytes_out), (Some(3_000), Some(0)));
    let classic =
        serde_json::json!({"bandwidth_bytes_day_in": "1 KB", "bandwidth_bytes_day_out": null});
    let (c, _) = port_counters(&classic);
    assert_eq!((c.bytes_in, c.bytes_out), (Some(1_000), None));
    let garbage = serde_json::json!({"bandwidth_bytes_lifetime_in": "lots"});
    let (_, bad) = port_counters(&garbage);
    assert_eq!(bad[0].0, "bandwidth_bytes_lifetime_in");
}
