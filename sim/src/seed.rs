//! The box's modems at start: deterministic IMEIs with a valid Luhn digit, nicks "DE_n",
//! carriers cycling Vodafone/Telekom/O2, distinct documentation-range IPs.

use super::state::ModemState;

const CARRIERS: [&str; 3] = ["Vodafone", "Telekom", "O2"];
const MODELS: [(&str, &str); 3] = [
    ("E3372h-320", "Huawei E3372h"),
    ("MF833V", "ZTE MF833V"),
    ("EC25-E", "Quectel EC25"),
];

/// The Luhn check digit for a string of digits.
pub(crate) fn luhn_digit(body: &str) -> u32 {
    let sum: u32 = body
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| match i % 2 {
            0 if d * 2 > 9 => d * 2 - 9,
            0 => d * 2,
            _ => d,
        })
        .sum();
    (10 - sum % 10) % 10
}

/// IMEI number `index` (1-based): "35" + 12-digit index + check digit.
pub fn imei(index: usize) -> String {
    let body = format!("35{index:012}");
    format!("{body}{}", luhn_digit(&body))
}

/// The box's modems; with `odd_imeis` the second has a 14-digit IMEI (no check digit) and
/// the third a 16-digit one (IMEISV: the IMEI body and a 2-digit software version).
pub(crate) fn modems(count: usize, odd_imeis: bool) -> Vec<ModemState> {
    numbered(1, count, odd_imeis)
}

/// `count` modems numbered from `first` (see `SimConfig::first_modem`).
pub(crate) fn numbered(first: usize, count: usize, odd_imeis: bool) -> Vec<ModemState> {
    let mut modems: Vec<ModemState> = (first..first + count).map(modem).collect();
    if odd_imeis {
        if let Some(m) = modems.get_mut(1) {
            m.imei.truncate(14);
        }
        if let Some(m) = modems.get_mut(2) {
            m.imei.truncate(14);
            m.imei.push_str("01");
        }
    }
    modems
}

fn modem(i: usize) -> ModemState {
    let (model, shown) = MODELS[(i - 1) % MODELS.len()];
    ModemState {
        imei: imei(i),
        nick: format!("DE_{i}"),
        model: model.to_string(),
        model_shown: shown.to_string(),
        phone: format!("+49151{i:07}"),
        iccid: format!("894902{i:013}"),
        usb_id: format!("1-1.{i}"),
        dev: format!("modem{i}"),
        carrier: CARRIERS[(i - 1) % CARRIERS.len()].to_string(),
        // Rotations draw from 203.0.113.x first, so the seed takes 198.51.100.x from the top.
        ip: format!("198.51.100.{}", 255 - i),
        online: true,
        signal: (55 + (i * 7) % 40).to_string(),
        rotating: false,
        rotations: 0,
        same_ip_next: false,
        position: u32::try_from(i).unwrap_or(u32::MAX),
        sim_status: "OK".to_string(),
        redirect_imposed: false,
        auto_rotation_min: 0,
        rebooting: false,
        path: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_matches_known_imei() {
        // 49015420323751 + 8 is the textbook example IMEI.
        assert_eq!(luhn_digit("49015420323751"), 8);
    }

    #[test]
    fn imeis_are_distinct_and_valid() {
        let all = modems(250, false);
        let mut imeis: Vec<_> = all.iter().map(|m| m.imei.clone()).collect();
        imeis.dedup();
        assert_eq!(imeis.len(), 250);
        for imei in &imeis {
            assert_eq!(imei.len(), 15);
            let (body, check) = imei.split_at(14);
            assert_eq!(luhn_digit(body).to_string(), check);
        }
        let mut ips: Vec<_> = all.iter().map(|m| m.ip.clone()).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 250);
    }

    #[test]
    fn odd_imeis_have_14_and_16_digits() {
        let odd = modems(4, true);
        let lengths: Vec<usize> = odd.iter().map(|m| m.imei.len()).collect();
        assert_eq!(lengths, [15, 14, 16, 15]);
        assert!(odd
            .iter()
            .all(|m| m.imei.bytes().all(|b| b.is_ascii_digit())));
    }
}
