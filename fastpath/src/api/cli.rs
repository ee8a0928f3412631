//! `fastpath numbers …`: the registry's command line, a client of the running daemon's API.

use std::net::SocketAddr;

use clap::{Args, Subcommand, ValueEnum};

use super::{RegisterRequest, TOKEN_ENV, client::Client};
use crate::registry::{Method, NumberRecord, PeerAddress, Transport};

#[derive(Args)]
pub struct NumbersArgs {
    /// Base URL of the daemon's API.
    #[arg(long, env = "FASTPATH_API", default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Bearer token.
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: NumbersCommand,
}

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    Call,
    Message,
    MissedCall,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Call => Method::Call,
            MethodArg::Message => Method::Message,
            MethodArg::MissedCall => Method::MissedCall,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    Tcp,
    Tls,
}

impl From<TransportArg> for Transport {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Udp => Transport::Udp,
            TransportArg::Tcp => Transport::Tcp,
            TransportArg::Tls => Transport::Tls,
        }
    }
}

#[derive(Subcommand)]
enum NumbersCommand {
    /// Register a number (it starts pending; verify it next).
    Add {
        number: String,
        #[arg(long)]
        account: String,
        /// The owner's SIP address, IP:port (`[v6]:port` for IPv6).
        #[arg(long)]
        peer: SocketAddr,
        #[arg(long, value_enum, default_value = "udp")]
        transport: TransportArg,
        /// Register without opting in to the direct IP path.
        #[arg(long)]
        no_opt_in: bool,
    },
    /// Start a verification, or with `--code` submit the code received by message.
    Verify {
        number: String,
        /// How to prove it (default: message).
        #[arg(long, value_enum, conflicts_with = "code")]
        method: Option<MethodArg>,
        /// The code received by message.
        #[arg(long)]
        code: Option<String>,
    },
    /// List registered numbers.
    List {
        #[arg(long)]
        account: Option<String>,
    },
    /// Revoke a number: it leaves the fast path at once.
    Revoke {
        number: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show one number (with `--audit`, its audit log).
    Show {
        number: String,
        #[arg(long)]
        audit: bool,
    },
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn print_record(r: &NumberRecord) {
    // RFC 3339 stops at year 9999 (humantime's Display fails past it): later is "never".
    const YEAR_9999_MS: u64 = 253_402_300_799_000;
    let when = |t: Option<i64>| match t.map(u64::try_from) {
        None => "-".to_owned(),
        Some(Ok(ms)) if ms <= YEAR_9999_MS => {
            let d = std::time::Duration::from_millis(ms);
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + d).to_string()
        }
        Some(Ok(_)) => "never".to_owned(),
        Some(Err(_)) => "before 1970".to_owned(),
    };
    println!("number        +{}", r.number);
    println!("account       {}", r.account);
    println!(
        "peer          {} ({})",
        r.peer.socket_addr(),
        r.peer.transport.as_str()
    );
    println!("state         {}", r.state.as_str());
    println!("opt_in        {}", r.opt_in);
    println!(
        "verified      {} by {}",
        when(r.verified_at),
        r.verification_method
            .map_or("-", crate::registry::method_str)
    );
    println!("expires       {}", when(r.expires_at));
    if let Some(f) = &r.last_failure {
        println!("last_failure  {f}");
    }
}

pub fn run(args: NumbersArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api, args.token);
    let json = args.json;
    match args.command {
        NumbersCommand::Add {
            number,
            account,
            peer,
            transport,
            no_opt_in,
        } => {
            let r = client.register(&RegisterRequest {
                number,
                account,
                peer: PeerAddress {
                    host: peer.ip(),
                    port: peer.port(),
                    transport: transport.into(),
                },
                opt_in: !no_opt_in,
            })?;
            if json {
                return print_json(&r);
            }
            print_record(&r);
        }
        NumbersCommand::Verify {
            number,
            code: Some(code),
            ..
        } => {
            let r = client.submit_code(&number, &code)?;
            if json {
                return print_json(&r);
            }
            print_record(&r);
        }
        NumbersCommand::Verify {
            number,
            method,
            code: None,
        } => {
            let method = method.unwrap_or(MethodArg::Message);
            let s = client.start_verification(&number, method.into())?;
            if json {
                return print_json(&s);
            }
            match (&s.code, &s.call_number) {
                (Some(code), _) => println!(
                    "calling +{}: answer and type {code} on the keypad",
                    s.number
                ),
                (_, Some(n)) => println!(
                    "call +{n} from +{} now; the call will be rejected and the number verified",
                    s.number
                ),
                _ => println!(
                    "code sent to +{} by message; submit it with `fastpath numbers verify {} --code CODE`",
                    s.number, s.number
                ),
            }
        }
        NumbersCommand::List { account } => {
            let list = client.list(account.as_deref())?;
            if json {
                return print_json(&list);
            }
            println!("{:<17} {:<10} {:<20} PEER", "NUMBER", "STATE", "ACCOUNT");
            for r in &list {
                println!(
                    "+{:<16} {:<10} {:<20} {}",
                    r.number,
                    r.state.as_str(),
                    r.account,
                    r.peer.socket_addr()
                );
            }
        }
        NumbersCommand::Revoke { number, reason } => {
            let r = client.revoke(&number, reason)?;
            if json {
                return print_json(&r);
            }
            print_record(&r);
        }
        NumbersCommand::Show { number, audit } => {
            if audit {
                let entries = client.audit(&number)?;
                if json {
                    return print_json(&entries);
                }
                for e in &entries {
                    println!(
                        "{}  {:>8} -> {:<8}  {}",
                        e.at,
                        e.from_state.map_or("-", |s| s.as_str()),
                        e.to_state.as_str(),
                        e.reason
                    );
                }
            } else {
                let r = client.show(&number)?;
                if json {
                    return print_json(&r);
                }
                print_record(&r);
            }
        }
    }
    Ok(())
}
