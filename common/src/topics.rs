//! MQTT topic names: the one place that defines them.
//!
//! ```text
//! edgefleet/<fleet>/devices/<id>/desired                 retained, fleet -> device
//! edgefleet/<fleet>/devices/<id>/reported                retained, device -> fleet
//! edgefleet/<fleet>/devices/<id>/telemetry/<module>      device -> fleet
//! edgefleet/<fleet>/devices/<id>/inputs/<module>         local apps -> model module
//! edgefleet/<fleet>/devices/<id>/commands/<name>         fleet -> device
//! edgefleet/<fleet>/devices/<id>/commands/<name>/result  device -> fleet
//! edgefleet/<fleet>/devices/<id>/acks                    retained, fleet -> device
//! edgefleet/<fleet>/devices/<id>/sync                    device -> fleet
//! ```

/// Why a name cannot be used in a topic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{what} {name:?} cannot be used in an MQTT topic: use 1-128 characters of letters, digits, '-', '_' and '.'"
)]
pub struct TopicNameError {
    pub what: &'static str,
    pub name: String,
}

/// Checks a fleet, device or module name: it must not contain MQTT separators or wildcards.
pub fn check_name(what: &'static str, name: &str) -> Result<(), TopicNameError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(TopicNameError {
            what,
            name: name.to_owned(),
        })
    }
}

/// The topics of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTopics {
    prefix: String,
}

impl DeviceTopics {
    pub fn new(fleet: &str, device_id: &str) -> Result<Self, TopicNameError> {
        check_name("fleet name", fleet)?;
        check_name("device id", device_id)?;
        Ok(Self {
            prefix: format!("edgefleet/{fleet}/devices/{device_id}"),
        })
    }

    pub fn desired(&self) -> String {
        format!("{}/desired", self.prefix)
    }

    pub fn reported(&self) -> String {
        format!("{}/reported", self.prefix)
    }

    pub fn telemetry(&self, module: &str) -> String {
        format!("{}/telemetry/{module}", self.prefix)
    }

    pub fn input(&self, module: &str) -> String {
        format!("{}/inputs/{module}", self.prefix)
    }

    pub fn command(&self, name: &str) -> String {
        format!("{}/commands/{name}", self.prefix)
    }

    pub fn command_result(&self, name: &str) -> String {
        format!("{}/commands/{name}/result", self.prefix)
    }

    /// The fleet's acknowledgements of the device's telemetry (`delivery::TelemetryAck`).
    pub fn acks(&self) -> String {
        format!("{}/acks", self.prefix)
    }

    /// The device's request for its desired manifest and acknowledgement, sent after every
    /// connect (`delivery::SyncRequest`).
    pub fn sync(&self) -> String {
        format!("{}/sync", self.prefix)
    }
}

/// Subscriptions of the fleet service for every device of a fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetTopics {
    prefix: String,
}

/// What a topic under a fleet's prefix carries, as the fleet reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceTopic<'a> {
    Reported { device_id: &'a str },
    Telemetry { device_id: &'a str, module: &'a str },
    CommandResult { device_id: &'a str, name: &'a str },
    Sync { device_id: &'a str },
}

impl FleetTopics {
    pub fn new(fleet: &str) -> Result<Self, TopicNameError> {
        check_name("fleet name", fleet)?;
        Ok(Self {
            prefix: format!("edgefleet/{fleet}/devices"),
        })
    }

    pub fn all_reported(&self) -> String {
        format!("{}/+/reported", self.prefix)
    }

    pub fn all_telemetry(&self) -> String {
        format!("{}/+/telemetry/+", self.prefix)
    }

    pub fn all_command_results(&self) -> String {
        format!("{}/+/commands/+/result", self.prefix)
    }

    pub fn all_sync(&self) -> String {
        format!("{}/+/sync", self.prefix)
    }

    /// Reads a topic received on one of this fleet's subscriptions.
    pub fn parse<'a>(&self, topic: &'a str) -> Option<DeviceTopic<'a>> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [device_id, "reported"] => Some(DeviceTopic::Reported { device_id }),
            [device_id, "telemetry", module] => Some(DeviceTopic::Telemetry { device_id, module }),
            [device_id, "commands", name, "result"] => {
                Some(DeviceTopic::CommandResult { device_id, name })
            }
            [device_id, "sync"] => Some(DeviceTopic::Sync { device_id }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_topics_follow_the_documented_layout() {
        let t = DeviceTopics::new("plant", "gw-01").expect("valid names");
        assert_eq!(t.desired(), "edgefleet/plant/devices/gw-01/desired");
        assert_eq!(t.reported(), "edgefleet/plant/devices/gw-01/reported");
        assert_eq!(
            t.telemetry("diabetes"),
            "edgefleet/plant/devices/gw-01/telemetry/diabetes"
        );
        assert_eq!(
            t.input("diabetes"),
            "edgefleet/plant/devices/gw-01/inputs/diabetes"
        );
        assert_eq!(
            t.command("logs"),
            "edgefleet/plant/devices/gw-01/commands/logs"
        );
        assert_eq!(
            t.command_result("logs"),
            "edgefleet/plant/devices/gw-01/commands/logs/result"
        );
    }

    #[test]
    fn the_fleet_reads_back_what_devices_publish() {
        let d = DeviceTopics::new("plant", "gw-01").expect("valid names");
        let f = FleetTopics::new("plant").expect("valid name");
        assert_eq!(
            f.parse(&d.reported()),
            Some(DeviceTopic::Reported { device_id: "gw-01" })
        );
        assert_eq!(
            f.parse(&d.telemetry("m")),
            Some(DeviceTopic::Telemetry {
                device_id: "gw-01",
                module: "m"
            })
        );
        assert_eq!(
            f.parse(&d.command_result("logs")),
            Some(DeviceTopic::CommandResult {
                device_id: "gw-01",
                name: "logs"
            })
        );
        assert_eq!(
            f.parse(&d.sync()),
            Some(DeviceTopic::Sync { device_id: "gw-01" })
        );
        assert_eq!(f.parse(&d.desired()), None);
        assert_eq!(f.parse(&d.acks()), None);
        assert_eq!(f.parse("edgefleet/other/devices/gw-01/reported"), None);
    }

    #[test]
    fn wildcards_and_separators_are_refused_in_names() {
        for bad in ["", "a/b", "a+", "#", "a b"] {
            assert!(DeviceTopics::new("plant", bad).is_err(), "{bad:?}");
        }
    }
}
