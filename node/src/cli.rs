//! Command-line surface of `hearth`: the clap definitions, and nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Hearth: your personal data, encrypted on your own devices.
///
/// Data commands work whether or not the node (`hearth up`) runs: with a
/// node the CLI goes through its local API, without one it opens the store
/// itself. `pair` and `pair confirm` need the running node (its network
/// holds the invitation); `join` must run while the node is stopped. Data
/// goes to stdout as JSON; messages go to stderr. Exit codes: 0 success,
/// 1 error, 2 usage.
#[derive(Debug, Parser)]
#[command(name = "hearth", version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The node's home directory (store, keys, API address and token).
    /// Default: the platform data dir, e.g. ~/.local/share/hearth.
    #[arg(long, global = true, env = "HEARTH_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Read the store passphrase from this file (first line). Without it,
    /// HEARTH_PASSPHRASE is used; without either, the store is unlocked by the
    /// key file <home>/keys/store.key.
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Print data as JSON where a command otherwise prints text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Every `hearth` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create this device's identity and a new account in an empty home.
    Init {
        /// A name for this device, shown to your other devices.
        #[arg(long)]
        name: Option<String>,
    },
    /// Run the node: join the mesh of this account's devices and serve the
    /// local API until SIGINT or SIGTERM. Initialises the home first if it
    /// is empty.
    ///
    /// The node listens on TCP and QUIC, finds the account's devices on the
    /// LAN (mDNS), through Kademlia from --bootstrap peers, or at addresses
    /// learned when pairing, and syncs every collection with them live.
    /// Only this account's devices (and a device pairing with an open
    /// invitation) get past the first exchange of a connection.
    Up {
        /// Where the API listens; loopback only. `127.0.0.1:0` picks a free
        /// port. The address is written to <home>/api.addr.
        #[arg(long, default_value = "127.0.0.1:7464", value_name = "ADDR")]
        api: SocketAddr,
        /// The device name, if this run initialises the home.
        #[arg(long)]
        name: Option<String>,
        /// A libp2p address to listen on, e.g. /ip4/0.0.0.0/tcp/7465 or
        /// /ip4/0.0.0.0/udp/7465/quic-v1. Repeat for several. Default: TCP and
        /// QUIC on every interface, on ports the OS picks.
        #[arg(long, value_name = "MULTIADDR")]
        listen: Vec<String>,
        /// Do not look for the account's devices on the LAN with mDNS.
        #[arg(long)]
        no_mdns: bool,
        /// A Kademlia bootstrap peer, with its /p2p/<id>. Repeatable.
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<String>,
        /// Serve as a relay for this account's devices behind NAT (use on a
        /// node with a reachable address).
        #[arg(long)]
        relay: bool,
        /// Be reachable through this relay (an account device running
        /// `--relay`), with its /p2p/<id>: for a device behind NAT. The
        /// devices then upgrade to a direct connection with DCUtR when they
        /// can. Repeatable.
        #[arg(long, value_name = "MULTIADDR")]
        via_relay: Vec<String>,
    },
    /// Invite a new device into this account: prints a one-time ticket
    /// (first line of stdout) and its QR code, then, on a terminal, waits
    /// for the new device and asks for the check code it shows.
    ///
    /// Needs the running daemon. On the new device run `hearth join
    /// <ticket>` or `hearth join --qr FILE.png`. Without a terminal the
    /// command returns at once and the invitation stays open in the daemon
    /// until its time runs out; confirm with `hearth pair confirm <code>`.
    Pair {
        /// `confirm <code>`; without it, a new invitation.
        #[command(subcommand)]
        action: Option<PairAction>,
        /// Also write the QR code as a PNG image to FILE.
        #[arg(long, value_name = "FILE.png")]
        qr: Option<PathBuf>,
        /// Seconds the invitation stays valid (1 to 3600).
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        ttl: u64,
    },
    /// Join an existing account with a ticket from `hearth pair` on one of
    /// its devices. Works on an empty home (it creates this device's
    /// identity) or on one that holds no data yet. Prints `check code:
    /// NNNNNN`; type it on the inviting device. Exits 0 once that device
    /// confirmed; the next `hearth up` syncs with the account.
    Join {
        /// The ticket (`hearth1…`).
        #[arg(required_unless_present = "qr", conflicts_with = "qr")]
        ticket: Option<String>,
        /// Read the ticket from a QR code image instead.
        #[arg(long, value_name = "FILE.png")]
        qr: Option<PathBuf>,
        /// A name for this device, shown to the others. Default: the name
        /// `hearth init --name` gave this home, else the host name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List this account's devices: id, name, when added, when last seen,
    /// whether online. `hearth devices remove <id>` removes one.
    Devices {
        /// `remove <id>`; without it, the list.
        #[command(subcommand)]
        action: Option<DevicesAction>,
    },
    /// This account's contact card, and adding, accepting and removing
    /// contacts. Two accounts are contacts once each added the other's
    /// card: `hearth contact card --qr me.png` on one side, `hearth contact
    /// add --qr me.png --name alice` on the other, which also sends this
    /// account's card back as a request for `hearth contact accept`.
    Contact {
        /// What to do.
        #[command(subcommand)]
        action: ContactAction,
    },
    /// List contacts: name, account id, state (established, or pending
    /// with its direction), and their devices with whether each is online.
    Contacts,
    /// Share a collection with a contact, read-only (--read) or read-write
    /// (--write); sharing again changes the level. The contact's devices
    /// get an offer to accept (`hearth shares accept <id>`); nothing syncs
    /// before. Prints the share's id.
    #[command(group(clap::ArgGroup::new("level").required(true).args(["read", "write"])))]
    Share {
        /// The collection, one of this account's own.
        collection: String,
        /// The contact's name or account id.
        contact: String,
        /// The contact may read it.
        #[arg(long)]
        read: bool,
        /// The contact may read and write it.
        #[arg(long)]
        write: bool,
    },
    /// Revoke a contact's access to a shared collection: nothing written
    /// afterwards reaches its devices, and its later writes are refused
    /// everywhere.
    Unshare {
        /// The collection.
        collection: String,
        /// The contact's name or account id.
        contact: String,
    },
    /// List shares, outgoing and incoming: id, collection, owner, contact,
    /// level and state (offered, active, declined, revoked); or accept or
    /// decline an offer.
    Shares {
        /// `accept <id> [--as NAME]` or `decline <id>`; without it, the list.
        #[command(subcommand)]
        action: Option<SharesAction>,
    },
    /// Ask a federated query: an aggregate over this device (scope
    /// `local`), this account's devices (`devices`) or the contacts whose
    /// consent policy allows it (`contacts`). Prints the groups, whether the
    /// answer is exact, who answered and who declined (and why), and the
    /// noise of a noisy answer. Needs the running node unless the scope is
    /// `local`.
    #[command(after_long_help = QUERY_HELP)]
    Query {
        /// The query as JSON (see the example below).
        #[arg(value_name = "JSON")]
        query: String,
    },
    /// What federated queries this account answers, per collection: set,
    /// list or remove consent policies. Without a policy a collection
    /// answers no one. Policies sync to every device of the account.
    #[command(after_long_help = CONSENT_HELP)]
    Consent {
        /// What to do.
        #[command(subcommand)]
        action: ConsentAction,
    },
    /// The audit log: every federated query this account's devices
    /// answered, declined or refused, newest first, with the querier, the
    /// decision and its reason, the ε charged and the collection.
    Audit,
    /// Show this device, its account and its data.
    Status,
    /// Write a record. JSON comes from the argument or stdin. Prints the
    /// record's _id. An existing record with the same id is replaced.
    Put {
        /// The collection (doctype), e.g. io.cozy.notes.
        collection: String,
        /// The record as a JSON object; read from stdin when absent.
        #[arg(value_name = "JSON")]
        record: Option<String>,
        /// The record's id; default: its "_id" field, else a new random id.
        #[arg(long)]
        id: Option<String>,
    },
    /// Print one record, with its _id and _rev.
    Get {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
    },
    /// Print every record of a collection, one JSON object per line.
    List {
        /// The collection.
        collection: String,
    },
    /// Delete a record.
    Delete {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
        /// Only delete if the record is still at this revision.
        #[arg(long)]
        rev: Option<String>,
    },
    /// Find records with a Mango selector; prints JSON Lines.
    ///
    /// Example: hearth find bank.operations '{"amount": {"$lt": 0}}' --sort -date --limit 10
    Find {
        /// The collection.
        collection: String,
        /// A Mango selector, e.g. '{"year": 2026, "tags": {"$all": ["home"]}}'.
        selector: String,
        /// Only these fields (comma-separated, dotted paths allowed).
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
        /// Sort fields, comma-separated; prefix with - for descending.
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
        sort: Vec<String>,
        /// Return at most N records.
        #[arg(long)]
        limit: Option<usize>,
        /// Skip the first N matches.
        #[arg(long)]
        skip: Option<usize>,
    },
    /// Run a grouped aggregate; prints JSON.
    ///
    /// Example: hearth aggregate energy.readings '{"selector": {"year": 2026},
    /// "group_by": ["month"], "aggregate": {"avg": {"$avg": "kwh"}, "n": {"$count": true}}}'
    Aggregate {
        /// The collection.
        collection: String,
        /// The aggregate query as JSON.
        query: String,
    },
    /// Declare an index on fields, used by `find` from then on.
    Index {
        /// The collection.
        collection: String,
        /// Fields to index, comma-separated.
        #[arg(value_delimiter = ',', required = true)]
        fields: Vec<String>,
        /// The index name; default derived from the fields.
        #[arg(long)]
        name: Option<String>,
    },
    /// List collections, one JSON object per line.
    Collections,
    /// Import records from a .json (array), .jsonl or .csv file.
    ///
    /// CSV: the header row names the fields; cells that parse as integers,
    /// floats or true/false are typed, empty cells are left out.
    Import {
        /// The collection.
        collection: String,
        /// The file.
        file: PathBuf,
    },
    /// Export a collection to stdout.
    Export {
        /// The collection.
        collection: String,
        /// jsonl: one record per line; automerge: one Automerge document.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
    },
}

/// `hearth pair …` subcommands.
#[derive(Debug, Subcommand)]
pub enum PairAction {
    /// Confirm the check code a joining device shows. A wrong code cancels
    /// the invitation.
    Confirm {
        /// The 6-digit code.
        code: String,
    },
}

/// `hearth contact …` subcommands.
#[derive(Debug, Subcommand)]
pub enum ContactAction {
    /// Print this account's contact card (first line of stdout, `hearthc1…`)
    /// and draw it as a QR code. It holds no secret: it names the account,
    /// proves it with the account's signed membership log, and says where
    /// its devices listen (run it while `hearth up` runs, so it knows).
    Card {
        /// Also write the QR code as a PNG image to FILE.
        #[arg(long, value_name = "FILE.png")]
        qr: Option<PathBuf>,
    },
    /// Verify a contact card and add its account as a contact named NAME;
    /// this account's card is sent to it as a request. Adding the card of
    /// an account that sent a request accepts it.
    Add {
        /// The card (`hearthc1…`).
        #[arg(required_unless_present = "qr", conflicts_with = "qr")]
        card: Option<String>,
        /// Read the card from a QR code image instead.
        #[arg(long, value_name = "FILE.png")]
        qr: Option<PathBuf>,
        /// Your name for this contact (1-64 characters).
        #[arg(long)]
        name: String,
    },
    /// Accept a pending request (from `hearth contacts`) as a contact named
    /// NAME.
    Accept {
        /// The request: the name its card gives, or its account id.
        who: String,
        /// Your name for this contact.
        #[arg(long)]
        name: String,
    },
    /// Remove a contact (or decline a request): its devices are refused
    /// from then on.
    Remove {
        /// The contact's name or account id.
        who: String,
    },
}

/// The example `hearth query --help` shows.
const QUERY_HELP: &str = r#"Example: each month's total and count over the contacts who consent, waiting up to 8 s:

  hearth query '{"collection": "energy.readings", "selector": {"year": 2026},
    "group_by": ["month"],
    "aggregate": {"kwh": {"$sum": "kwh"}, "n": {"$count": true}},
    "scope": "contacts", "deadline_ms": 8000}'

Fields of a query:
  collection   the collection asked about, on every side
  selector     a Mango selector on its records (default: all)
  group_by     fields whose values form the groups (default: one group)
  aggregate    name -> {"$count": true} or {"$sum"|"$avg"|"$variance"|"$stddev"|"$min"|"$max": field}
  scope        "local" (default), "devices" (this account's devices, records counted once)
               or "contacts" (established contacts that consent, each account counted once)
  contacts     with scope contacts: only these, by your name for them or account id
  deadline_ms  how long to wait for answers, 1 to 60000 (default 5000)

A contact answers only what its consent policy allows (`hearth consent --help`):
exactly, to a querier it trusts, or as its share of a secure sum over two
aggregator accounts, which add discrete Laplace noise once. The output says
which: "exact: yes", or the noise with the ε spent and a 95 % interval per
value. --json prints the result as the API gives it."#;

/// The example `hearth consent --help` shows.
const CONSENT_HELP: &str = r#"Examples:

  Noisy answers to every established contact, at least 3 accounts per answer,
  ε 1 per query and at most 1.5 per querier and 8 in all per day:

  hearth consent set energy.readings '{"queriers": "contacts",
    "aggregates": ["$count", "$sum", "$avg"],
    "fields": {"kwh": {"min": 0, "max": 1000}},
    "group_by": {"month": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]},
    "exact": false, "min_cohort": 3, "epsilon_per_query": 1.0,
    "budget": {"per_querier_per_day": 1.5, "per_day": 8}}'

  Exact answers to one contact you trust (by your name for it):

  hearth consent set energy.readings '{"queriers": ["Alice"],
    "aggregates": ["$count", "$sum", "$avg", "$min", "$max"],
    "fields": {"kwh": {"min": 0, "max": 1000}},
    "group_by": {"month": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]},
    "exact": true}'

  hearth consent list
  hearth consent remove energy.readings

Fields of a policy (unknown fields are refused):
  queriers                "contacts", or a list of contact names or account ids
  aggregates              the operators a query may use
  fields                  the fields aggregates may read, each clamped to [min, max]
  group_by                the fields a query may group by, with the values a group may take
  exact                   true: exact answers, no noise, no cohort (a trusted querier)
  min_cohort              fewest accounts a noisy answer is computed over (default 3)
  epsilon_per_query       the ε one noisy query costs (default 1)
  budget                  {"per_querier_per_day": ε, "per_day": ε}
  max_records_per_group   records of this account one group counts (default 1)

A policy naming a querier wins over one for all contacts. The same question
asked again the same day costs no ε and gets the same numbers; a query over
the budget is declined ("budget"), and every decision goes to `hearth audit`."#;

/// `hearth consent …` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConsentAction {
    /// Store a policy for a collection (replacing the one for the same
    /// queriers); prints the stored consent.
    #[command(after_long_help = CONSENT_HELP)]
    Set {
        /// The collection, one of this account's own.
        collection: String,
        /// The policy as JSON (see `hearth consent --help`).
        #[arg(value_name = "POLICY-JSON")]
        policy: String,
    },
    /// List every consent policy: collection, queriers, exact or noisy.
    List,
    /// Remove every policy of a collection: it answers no one from then on.
    Remove {
        /// The collection.
        collection: String,
    },
}

/// `hearth shares …` subcommands.
#[derive(Debug, Subcommand)]
pub enum SharesAction {
    /// Accept an offered share. It appears on every device of this account
    /// as a new collection, by default `shared.<owner>.<collection>`; this
    /// account's own collections never mix with it.
    Accept {
        /// The share's id, or a unique prefix of it (from `hearth shares`).
        id: String,
        /// The local collection name to give it.
        #[arg(long = "as", value_name = "LOCAL-NAME")]
        local: Option<String>,
    },
    /// Decline an offered share (or stop syncing one accepted before; its
    /// records stay).
    Decline {
        /// The share's id, or a unique prefix of it.
        id: String,
    },
}

/// `hearth devices …` subcommands.
#[derive(Debug, Subcommand)]
pub enum DevicesAction {
    /// Remove a device from the account for good (a lost or sold one). Every
    /// device of the account refuses it from then on, including devices
    /// that hear of the removal later through another device.
    Remove {
        /// The device id (`12D3KooW…`, from `hearth devices`).
        id: String,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// One JSON record per line.
    Jsonl,
    /// The Automerge document bytes.
    Automerge,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON objects quoted as shell arguments (`'{…}'`) in `help`.
    fn quoted(help: &str) -> Vec<serde_json::Value> {
        let mut found = Vec::new();
        let mut rest = help;
        while let Some(start) = rest.find("'{") {
            let end = rest[start..].find("}'").unwrap() + start;
            found.push(serde_json::from_str(&rest[start + 1..=end]).unwrap());
            rest = &rest[end + 2..];
        }
        found
    }

    #[test]
    fn the_examples_in_the_help_are_a_valid_query_and_valid_policies() {
        let queries = quoted(QUERY_HELP);
        assert_eq!(queries.len(), 1);
        hearth_crdt::federated::FederatedQuery::parse(&queries[0]).unwrap();
        let policies = quoted(CONSENT_HELP);
        assert_eq!(policies.len(), 2);
        for policy in &policies {
            hearth_crdt::federated::Policy::parse(policy).unwrap();
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
