//! Indexes of the per-CPU `STATS` array: one counter per outcome of the XDP program.

/// Every packet the XDP program sees bumps exactly one of these.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A registered number's request, rewritten and sent to its peer.
    Hit = 0,
    /// A well-formed INVITE/ACK/CANCEL to a number not in `ROUTES`.
    Miss,
    /// Not IPv4/IPv6 UDP to a configured SIP port.
    NotSip,
    /// Headers that are cut short or whose lengths disagree, stacked VLAN tags.
    Malformed,
    /// An IPv4 fragment: the SIP request line may be in another packet.
    Fragment,
    /// IPv4 options or IPv6 extension headers: left to the kernel.
    IpOptions,
    /// SIP traffic that is not an INVITE, ACK or CANCEL request (responses, other methods).
    OtherMethod,
    /// A request line the classifier cannot turn into a number with certainty.
    NotNumber,
    /// The peer is unknown, marked down, or of the other address family.
    PeerUnavailable,
    /// `bpf_fib_lookup` did not give a usable next hop on a managed interface.
    FibFailed,
    /// TTL or hop limit would expire: the kernel answers with ICMP.
    TtlExpired,
    /// A registered number's request addressed to another host: transit traffic through
    /// the gateway is not the fast path's to redirect.
    NotLocal,
}

impl Counter {
    /// Number of counters; the `STATS` array has this many slots.
    pub const COUNT: u32 = Counter::NotLocal as u32 + 1;

    pub const ALL: [Counter; Self::COUNT as usize] = [
        Self::Hit,
        Self::Miss,
        Self::NotSip,
        Self::Malformed,
        Self::Fragment,
        Self::IpOptions,
        Self::OtherMethod,
        Self::NotNumber,
        Self::PeerUnavailable,
        Self::FibFailed,
        Self::TtlExpired,
        Self::NotLocal,
    ];

    /// Snake-case name used in logs, metrics labels and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::NotSip => "not_sip",
            Self::Malformed => "malformed",
            Self::Fragment => "fragment",
            Self::IpOptions => "ip_options",
            Self::OtherMethod => "other_method",
            Self::NotNumber => "not_number",
            Self::PeerUnavailable => "peer_unavailable",
            Self::FibFailed => "fib_failed",
            Self::TtlExpired => "ttl_expired",
            Self::NotLocal => "not_local",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_counter_in_index_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
