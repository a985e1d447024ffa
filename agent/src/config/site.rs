//! The `[site]` section: the labels reported to the plane with the inventory (the box's
//! public host, its ISO country and an optional city).

use super::{invalid, ConfigError};
use farmhand_protocol::Site;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSite {
    public_host: String,
    country: String,
    #[serde(default)]
    city: Option<String>,
}

impl FileSite {
    /// The labels, the country upper-cased and an empty city dropped.
    pub(super) fn into_site(self) -> Site {
        Site {
            public_host: self.public_host,
            country: self.country.to_ascii_uppercase(),
            city: self.city.filter(|c| !c.trim().is_empty()),
        }
    }
}

/// Checks the host looks like one and the country is an assigned ISO code.
pub(super) fn check_site(path: &Path, site: &Site) -> Result<(), ConfigError> {
    let host = site.public_host.trim();
    if host.is_empty() || host.len() > 253 || host.contains(char::is_whitespace) {
        return Err(invalid(
            path,
            "site.public_host",
            "must be a host name or IP address",
        ));
    }
    if !is_iso_country(&site.country) {
        return Err(invalid(
            path,
            "site.country",
            format!(
                "{:?} is not an ISO 3166-1 alpha-2 country code (e.g. \"DE\")",
                site.country
            ),
        ));
    }
    Ok(())
}

/// ISO 3166-1 alpha-2 codes, officially assigned.
const ISO_COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ \
BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET \
FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR \
IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN \
MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY \
QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR \
TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// Whether `code` is an assigned ISO 3166-1 alpha-2 code (upper case).
pub fn is_iso_country(code: &str) -> bool {
    code.len() == 2 && ISO_COUNTRIES.split(' ').any(|c| c == code)
}
