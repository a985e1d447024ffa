//! What a simulated agent says: its inventory of fake modems and an instant, always
//! successful answer to every command (fake ports for `provision`).

use farmhand_protocol::{
    AgentMessage, Command, CommandBody, CommandOutput, CommandResult, Inventory, Modem, Outcome,
    Provisioned, Reconciled, Released, Rotated, Site, Updated,
};

/// The IMEI of modem `modem` on agent `agent`: `prefix` (2 digits) + 8 + 5 digits, so runs
/// with different prefixes never share an IMEI on the same plane.
pub fn imei(prefix: u8, agent: usize, modem: usize) -> String {
    format!(
        "{:02}{:08}{:05}",
        prefix % 100,
        agent % 100_000_000,
        modem % 100_000
    )
}

/// The full inventory of agent `agent` with `modems` online modems and no ports.
pub fn inventory(prefix: u8, agent: usize, modems: usize) -> AgentMessage {
    let modems = (0..modems)
        .map(|m| Modem {
            imei: imei(prefix, agent, m),
            nick: format!("modem{m}"),
            carrier: Some("Vodafone".into()),
            ext_ip: Some(format!(
                "10.{}.{}.{}",
                agent / 65536 % 256,
                agent / 256 % 256,
                agent % 256
            )),
            online: true,
            rotating: false,
            signal: Some(80),
            model: Some("swarm".into()),
            ..Modem::default()
        })
        .collect();
    AgentMessage::Inventory(Inventory {
        site: Site {
            public_host: "127.0.0.1".into(),
            country: "DE".into(),
            city: None,
        },
        proxysmart_reachable: true,
        modems,
        ports: Vec::new(),
        max_ports_per_modem: None,
        capabilities: None,
        probes_refused: false,
    })
}

/// The successful result of `cmd`; `next_port` numbers the fake ports of this agent.
pub fn answer(cmd: &Command, next_port: &mut u16) -> AgentMessage {
    let output = match &cmd.body {
        CommandBody::Provision(p) => {
            *next_port = next_port.wrapping_add(1) % 20_000;
            CommandOutput::Provision(Provisioned {
                allocation_id: p.allocation_id.clone(),
                imei: p.imei.clone(),
                port_id: format!("swarm{next_port}"),
                http_port: 10_000 + *next_port,
                socks_port: 30_000 + *next_port,
            })
        }
        CommandBody::Release(r) => CommandOutput::Release(Released {
            allocation_id: r.allocation_id.clone(),
            existed: true,
        }),
        CommandBody::RotateIp(r) => CommandOutput::RotateIp(Rotated {
            imei: r.imei.clone(),
            old_ip: Some("198.51.100.1".into()),
            new_ip: Some("198.51.100.2".into()),
            changed: true,
        }),
        CommandBody::UpdatePort(u) => CommandOutput::UpdatePort(Updated {
            allocation_id: u.allocation_id.clone(),
        }),
        CommandBody::Reconcile(_) => CommandOutput::Reconcile(Reconciled {
            removed: Vec::new(),
            missing: Vec::new(),
        }),
    };
    AgentMessage::CommandResult(CommandResult {
        id: cmd.id.clone(),
        outcome: Outcome::Ok { output },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imeis_are_fifteen_digits_and_distinct() {
        let a = imei(35, 9_999, 7);
        assert_eq!(a.len(), 15);
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        assert_ne!(a, imei(36, 9_999, 7));
        assert_ne!(a, imei(35, 9_998, 7));
    }
}
