use crate::envelope::{Envelope, Protocol};
use crate::host::Host;
use crate::rt::Rt;
use crate::{config, TRACING_TARGET};

use crate::FastMap;
use rand::{Rng, RngCore};
use rand_distr::{Distribution, Exp};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Error, ErrorKind, Result};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::time::Instant;

/// Describes the network topology.
pub(crate) struct Topology {
    config: config::Link,

    /// Hosts in the order they were registered (connsim patch).
    hosts: BTreeMap<IpAddr, u64>,

    /// The links between hosts that have met, by the key [`link_entry`]
    /// gives them (connsim patch: turmoil made a link for every pair of
    /// hosts when a host was registered, n²/2 of them: 560,000 links and
    /// 144 MiB in a world of a thousand connectors, every message's lookup
    /// a cache miss among them. A link is now made when first used, and
    /// keyed by the index turmoil's eager registration gave it, so every
    /// walk over links meets them in the same order as before and the
    /// simulation is unchanged).
    links: BTreeMap<u64, (Pair, Link)>,

    /// Keys of the links holding messages (connsim patch: ticking and
    /// delivering visit only these, not every pair of hosts).
    active: BTreeSet<u64>,

    /// Per destination host, the links (keys) holding messages ready for
    /// it (connsim patch: delivering to a host visits only these).
    ready: BTreeMap<IpAddr, BTreeSet<u64>>,

    /// The network's clock (connsim patch: turmoil ticks a runtime of its
    /// own for this every step, a `block_on` per step; steps are whole
    /// milliseconds, so adding them up gives the same instants).
    now: Instant,
}

/// This type is used as the key in the [`Topology::links`] map. See [`new`]
/// which orders the addrs, such that this type uniquely identifies the link
/// between two hosts on the network.
#[derive(Debug, Clone, Hash, Eq, PartialEq)]
struct Pair(IpAddr, IpAddr);

impl Pair {
    fn new(a: IpAddr, b: IpAddr) -> Pair {
        assert_ne!(a, b);

        if a < b {
            Pair(a, b)
        } else {
            Pair(b, a)
        }
    }
}

/// An iterator for the network topology, providing access to all active links
/// in the simulated network.
pub struct LinksIter<'a> {
    iter: std::collections::btree_map::ValuesMut<'a, u64, (Pair, Link)>,
}

/// An iterator for the link, providing access to sent messages that have not
/// yet been delivered.
pub struct LinkIter<'a> {
    a: IpAddr,
    b: IpAddr,
    now: Instant,
    iter: std::collections::vec_deque::IterMut<'a, Sent>,
}

impl LinkIter<'_> {
    /// The [`IpAddr`] pair for the link. Always ordered to uniquely identify
    /// the link.
    pub fn pair(&self) -> (IpAddr, IpAddr) {
        (self.a, self.b)
    }

    /// Schedule all messages on the link for delivery the next time the
    /// simulation steps, consuming the iterator.
    pub fn deliver_all(self) {
        for sent in self {
            sent.deliver();
        }
    }
}

/// Provides a reference to a message that is currently inflight on the network
/// from one host to another.
pub struct SentRef<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    now: Instant,
    sent: &'a mut Sent,
}

impl SentRef<'_> {
    /// The (src, dst) [`SocketAddr`] pair for the message.
    pub fn pair(&self) -> (SocketAddr, SocketAddr) {
        (self.src, self.dst)
    }

    /// The message [`Protocol`].
    pub fn protocol(&self) -> &Protocol {
        &self.sent.protocol
    }

    /// Schedule the message for delivery the next time the simulation steps,
    /// consuming the item.
    pub fn deliver(self) {
        self.sent.deliver(self.now);
    }
}

impl<'a> Iterator for LinksIter<'a> {
    type Item = LinkIter<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let (pair, link) = self.iter.next()?;

        Some(LinkIter {
            a: pair.0,
            b: pair.1,
            now: link.now,
            iter: link.sent.iter_mut(),
        })
    }
}

impl<'a> Iterator for LinkIter<'a> {
    type Item = SentRef<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let sent = self.iter.next()?;

        Some(SentRef {
            src: sent.src,
            dst: sent.dst,
            now: self.now,
            sent,
        })
    }
}

/// A two-way link between two hosts on the network.
struct Link {
    /// The state of the link from node 'a' to node 'b'.
    /// Of the two nodes attached to a link, 'a' is the
    /// one whose ip address sorts smallest.
    state_a_b: State,
    /// The state of the link from node 'b' to node 'a'.
    /// Of the two nodes attached to a link, 'b' is the
    /// one whose ip address sorts greatest.
    state_b_a: State,

    /// Optional, per-link configuration.
    config: config::Link,

    /// Sent messages that are either scheduled for delivery in the future
    /// or are on hold.
    sent: VecDeque<Sent>,

    /// Messages that are ready to be delivered.
    deliverable: FastMap<IpAddr, VecDeque<Envelope>>,

    /// The current network time, moved forward with [`Link::tick`].
    now: Instant,
}

/// States that a link between two nodes can be in.
#[derive(Clone, Copy)]
enum State {
    /// The link is healthy.
    Healthy,

    /// The link was explicitly partitioned.
    ExplicitPartition,

    /// The link was randomly partitioned.
    RandPartition,

    /// Messages are being held indefinitely.
    Hold,
}

impl Topology {
    pub(crate) fn new(config: config::Link) -> Topology {
        Topology {
            config,
            hosts: BTreeMap::new(),
            links: BTreeMap::new(),
            active: BTreeSet::new(),
            ready: BTreeMap::new(),
            now: Rt::no_software().now(),
        }
    }

    /// Registers a host: it has a link to every host registered before it
    /// (connsim patch: made when first used, see [`Topology::links`]).
    pub(crate) fn register(&mut self, addr: IpAddr) {
        let next = self.hosts.len() as u64;
        assert!(self.hosts.insert(addr, next).is_none());
    }

    pub(crate) fn set_max_message_latency(&mut self, value: Duration) {
        self.config.latency_mut().max_message_latency = value;
    }

    pub(crate) fn set_link_message_latency(&mut self, a: IpAddr, b: IpAddr, value: Duration) {
        let Topology { config, hosts, links, now, .. } = self;
        let latency = link_mut(hosts, links, *now, Pair::new(a, b)).latency(config.latency());
        latency.min_message_latency = value;
        latency.max_message_latency = value;
    }

    pub(crate) fn set_link_max_message_latency(&mut self, a: IpAddr, b: IpAddr, value: Duration) {
        let Topology { config, hosts, links, now, .. } = self;
        link_mut(hosts, links, *now, Pair::new(a, b)).latency(config.latency()).max_message_latency = value;
    }

    pub(crate) fn set_message_latency_curve(&mut self, value: f64) {
        self.config.latency_mut().latency_distribution = Exp::new(value).unwrap();
    }

    pub(crate) fn set_fail_rate(&mut self, value: f64) {
        self.config.message_loss_mut().fail_rate = value;
    }

    pub(crate) fn set_link_fail_rate(&mut self, a: IpAddr, b: IpAddr, value: f64) {
        let Topology { config, hosts, links, now, .. } = self;
        link_mut(hosts, links, *now, Pair::new(a, b)).message_loss(config.message_loss()).fail_rate = value;
    }

    // Send a `message` from `src` to `dst`. This method returns immediately,
    // and message delivery happens at a later time (or never, if the link is
    // broken).
    pub(crate) fn enqueue_message(
        &mut self,
        rand: &mut dyn RngCore,
        src: SocketAddr,
        dst: SocketAddr,
        message: Protocol,
    ) -> Result<()> {
        let Topology { config, hosts, links, active, ready, now } = self;
        if let Some((index, link)) = link_entry(hosts, links, *now, Pair::new(src.ip(), dst.ip())) {
            let result = link.enqueue_message(config, rand, src, dst, message);
            if link.has_messages() {
                active.insert(index);
            }
            note_ready(ready, index, link);
            result
        } else {
            Err(Error::new(
                ErrorKind::ConnectionRefused,
                "Connection refused",
            ))
        }
    }

    // Move messages from any network links to the `dst` host.
    /// Messages not yet handed to a host for which `live` holds (connsim
    /// patch).
    pub(crate) fn messages_in_flight(&self, live: impl Fn(IpAddr) -> bool) -> usize {
        self.active
            .iter()
            .filter_map(|i| self.links.get(i).map(|(_, l)| l))
            .map(|l| {
                let sent = l.sent.iter().filter(|m| live(m.dst.ip())).count();
                let ready: usize = l.deliverable.iter().filter(|(dst, _)| live(**dst)).map(|(_, q)| q.len()).sum();
                sent + ready
            })
            .sum()
    }

    /// Calls `f` with the destination of every message ready for delivery
    /// (connsim patch).
    pub(crate) fn deliverable_to(&self, mut f: impl FnMut(IpAddr)) {
        self.ready.keys().for_each(|dst| f(*dst));
    }

    pub(crate) fn deliver_messages(&mut self, rand: &mut dyn RngCore, dst: &mut Host) {
        // Only the links with messages ready for `dst`, in link order (as
        // turmoil's walk over every link would meet them).
        let Topology { config, links, active, ready, .. } = self;
        let Some(indexes) = ready.remove(&dst.addr) else { return };
        for index in indexes {
            let Some((_, link)) = links.get_mut(&index) else { continue };
            link.deliver_messages(config, rand, dst);
            // A refused message goes back on the link (a reset to its sender).
            note_ready(ready, index, link);
            if !link.has_messages() {
                active.remove(&index);
            }
        }
    }

    pub(crate) fn hold(&mut self, a: IpAddr, b: IpAddr) {
        self.get_link_mut(&Pair::new(a, b)).hold();
    }

    pub(crate) fn release(&mut self, a: IpAddr, b: IpAddr) {
        self.get_link_mut(&Pair::new(a, b)).release();
    }

    pub(crate) fn partition(&mut self, a: IpAddr, b: IpAddr) {
        self.get_link_mut(&Pair::new(a, b)).explicit_partition();
    }

    pub(crate) fn partition_oneway(&mut self, a: IpAddr, b: IpAddr) {
        let link = &mut self.get_link_mut(&Pair::new(a, b));
        link.partition_oneway(a, b);
    }

    pub(crate) fn repair(&mut self, a: IpAddr, b: IpAddr) {
        self.get_link_mut(&Pair::new(a, b)).explicit_repair();
    }

    pub(crate) fn repair_oneway(&mut self, a: IpAddr, b: IpAddr) {
        let link = &mut self.get_link_mut(&Pair::new(a, b));
        link.repair_oneway(a, b);
    }

    pub(crate) fn tick_by(&mut self, duration: Duration) {
        self.now += duration;
        let now = self.now;
        for index in &self.active {
            if let Some((_, link)) = self.links.get_mut(index) {
                link.tick(now);
                note_ready(&mut self.ready, *index, link);
            }
        }
    }

    pub(crate) fn iter_mut(&mut self) -> LinksIter<'_> {
        LinksIter {
            iter: self.links.values_mut(),
        }
    }

    #[inline]
    fn get_link_mut(&mut self, pair: &Pair) -> &mut Link {
        link_mut(&self.hosts, &mut self.links, self.now, pair.clone())
    }
}

/// The link between two registered hosts, made now if they have not met
/// yet: its key (the index turmoil gave it when it made a link for every
/// pair as hosts registered: the hosts before host k had k(k-1)/2 links,
/// then come k's links to each of them in their order) and the link, its
/// clock caught up (idle links are not ticked). `None` when either host is
/// unknown (connsim patch).
fn link_entry<'a>(
    hosts: &BTreeMap<IpAddr, u64>,
    links: &'a mut BTreeMap<u64, (Pair, Link)>,
    now: Instant,
    pair: Pair,
) -> Option<(u64, &'a mut Link)> {
    let (a, b) = (*hosts.get(&pair.0)?, *hosts.get(&pair.1)?);
    let (early, late) = (a.min(b), a.max(b));
    let key = late * (late - 1) / 2 + early;
    let (_, link) = links.entry(key).or_insert_with(|| (pair, Link::new(now)));
    link.now = now;
    Some((key, link))
}

/// [`link_entry`] for two hosts that must both be registered.
fn link_mut<'a>(
    hosts: &BTreeMap<IpAddr, u64>,
    links: &'a mut BTreeMap<u64, (Pair, Link)>,
    now: Instant,
    pair: Pair,
) -> &'a mut Link {
    let shown = pair.clone();
    link_entry(hosts, links, now, pair)
        .map(|(_, link)| link)
        .unwrap_or_else(|| panic!("unable to find link between {shown:?}"))
}

/// Records the destinations `link` (at `index`) has messages ready for.
fn note_ready(ready: &mut BTreeMap<IpAddr, BTreeSet<u64>>, index: u64, link: &Link) {
    for (dst, queue) in &link.deliverable {
        if !queue.is_empty() {
            ready.entry(*dst).or_default().insert(index);
        }
    }
}

/// Represents a message sent between two hosts on the network.
struct Sent {
    src: SocketAddr,
    dst: SocketAddr,
    status: DeliveryStatus,
    protocol: Protocol,
}

impl Sent {
    fn deliver(&mut self, now: Instant) {
        self.status = DeliveryStatus::DeliverAfter(now);
    }
}

enum DeliveryStatus {
    DeliverAfter(Instant),
    Hold,
}

impl Link {
    fn new(now: Instant) -> Link {
        Link {
            state_a_b: State::Healthy,
            state_b_a: State::Healthy,
            config: config::Link::default(),
            sent: VecDeque::new(),
            deliverable: FastMap::default(),
            now,
        }
    }

    fn enqueue_message(
        &mut self,
        global_config: &config::Link,
        rand: &mut dyn RngCore,
        src: SocketAddr,
        dst: SocketAddr,
        message: Protocol,
    ) -> Result<()> {
        tracing::trace!(target: TRACING_TARGET, ?src, ?dst, protocol = %message, "Send");

        self.rand_partition_or_repair(global_config, rand);
        let result = self.enqueue(global_config, rand, src, dst, message);
        self.process_deliverables();
        result
    }

    fn get_state_for_message(&self, src: IpAddr, dst: IpAddr) -> State {
        // Between each pair of ip-addresses there can exist a link.
        // A link between two such pairs can be constructed as
        // Pair::new(x,y) or Pair::new(y,x). These two expressions create
        // the exact same link. We denote one of the ends of the link as 'a',
        // and the other 'b'. 'a' is always the one that compares smaller, i.e,
        // `a < b` holds.
        if src < dst {
            self.state_a_b
        } else {
            self.state_b_a
        }
    }

    // src -> link -> dst
    //        ^-- you are here!
    //
    // Messages may be dropped, sit on the link for a while (due to latency, or
    // because the link has stalled), or be delivered immediately.
    // Link will return an Err(()) if the socket buffer is full.
    fn enqueue(
        &mut self,
        global_config: &config::Link,
        rand: &mut dyn RngCore,
        src: SocketAddr,
        dst: SocketAddr,
        message: Protocol,
    ) -> Result<()> {
        let state = self.get_state_for_message(src.ip(), dst.ip());
        let status = match state {
            State::Healthy => {
                let delay = self.delay(global_config.latency(), rand);
                DeliveryStatus::DeliverAfter(self.now + delay)
            }
            // Only A->B is blocked, so B can send, so we can send if src is B
            State::Hold => {
                tracing::trace!(target: TRACING_TARGET,?src, ?dst, protocol = %message, "Hold");
                DeliveryStatus::Hold
            }
            _ => {
                tracing::trace!(target: TRACING_TARGET,?src, ?dst, protocol = %message, "Drop");
                return Ok(());
            }
        };

        let sent = Sent {
            src,
            dst,
            status,
            protocol: message,
        };

        self.sent.push_back(sent);
        Ok(())
    }

    fn tick(&mut self, now: Instant) {
        self.now = now;
        self.process_deliverables();
    }

    /// Whether messages sit on this link, sent or ready (connsim patch).
    fn has_messages(&self) -> bool {
        !self.sent.is_empty() || self.deliverable.values().any(|q| !q.is_empty())
    }

    fn process_deliverables(&mut self) {
        // TODO: `drain_filter` is not yet stable, and so we have a low quality
        // implementation here that avoids clones.
        let mut deliverable = 0;
        for i in 0..self.sent.len() {
            let index = i - deliverable;
            let sent = &self.sent[index];
            if let DeliveryStatus::DeliverAfter(time) = sent.status {
                if time <= self.now {
                    let sent = self.sent.remove(index).unwrap();
                    let envelope = Envelope {
                        src: sent.src,
                        dst: sent.dst,
                        message: sent.protocol,
                    };
                    self.deliverable
                        .entry(sent.dst.ip())
                        .or_default()
                        .push_back(envelope);
                    deliverable += 1;
                }
            }
        }
    }

    // FIXME: This implementation does not respect message delivery order. If
    // host A and host B are ordered (by addr), and B sends before A, then this
    // method will deliver A's message before B's.
    fn deliver_messages(
        &mut self,
        global_config: &config::Link,
        rand: &mut dyn RngCore,
        host: &mut Host,
    ) {
        let deliverable = self
            .deliverable
            .entry(host.addr)
            .or_default()
            .drain(..)
            .collect::<Vec<Envelope>>();

        for message in deliverable {
            let (src, dst) = (message.src, message.dst);
            if let Err(message) = host.receive_from_network(message) {
                let _ = self.enqueue_message(global_config, rand, dst, src, message);
            }
        }
    }

    // Randomly break or repair this link.
    fn rand_partition_or_repair(&mut self, global_config: &config::Link, rand: &mut dyn RngCore) {
        let do_rand = self.rand_partition(global_config.message_loss(), rand);
        match (self.state_a_b, self.state_b_a) {
            (State::Healthy, _) | (_, State::Healthy) if do_rand => {
                self.state_a_b = State::RandPartition;
                self.state_b_a = State::RandPartition;

                self.sent.clear();
            }
            (State::RandPartition, _) | (_, State::RandPartition)
                if self.rand_repair(global_config.message_loss(), rand) =>
            {
                self.release();
            }
            _ => {}
        }
    }

    fn hold(&mut self) {
        self.state_a_b = State::Hold;
        self.state_b_a = State::Hold;

        for sent in &mut self.sent {
            sent.status = DeliveryStatus::Hold;
        }
    }

    // This link becomes healthy, and any held messages are scheduled for delivery.
    fn release(&mut self) {
        self.state_a_b = State::Healthy;
        self.state_b_a = State::Healthy;
        for sent in &mut self.sent {
            if let DeliveryStatus::Hold = sent.status {
                sent.deliver(self.now);
            }
        }
    }

    fn explicit_partition(&mut self) {
        self.state_a_b = State::ExplicitPartition;
        self.state_b_a = State::ExplicitPartition;

        self.sent.clear();
    }

    fn partition_oneway(&mut self, from: IpAddr, to: IpAddr) {
        if from < to {
            self.state_a_b = State::ExplicitPartition;
        } else {
            self.state_b_a = State::ExplicitPartition;
        }

        self.sent.retain(|sent| sent.src.ip() != from);
    }

    fn repair_oneway(&mut self, from: IpAddr, to: IpAddr) {
        if from < to {
            self.state_a_b = State::Healthy;
        } else {
            self.state_b_a = State::Healthy;
        }
    }

    // Repair the link, without releasing any held messages.
    fn explicit_repair(&mut self) {
        self.state_a_b = State::Healthy;
        self.state_b_a = State::Healthy;
    }

    /// Should the link be randomly partitioned
    fn rand_partition(&self, global: &config::MessageLoss, rand: &mut dyn RngCore) -> bool {
        let config = self.config.message_loss.as_ref().unwrap_or(global);
        let fail_rate = config.fail_rate;
        fail_rate > 0.0 && rand.random_bool(fail_rate)
    }

    fn rand_repair(&self, global: &config::MessageLoss, rand: &mut dyn RngCore) -> bool {
        let config = self.config.message_loss.as_ref().unwrap_or(global);
        let repair_rate = config.repair_rate;
        repair_rate > 0.0 && rand.random_bool(repair_rate)
    }

    fn delay(&self, global: &config::Latency, rand: &mut dyn RngCore) -> Duration {
        let config = self.config.latency.as_ref().unwrap_or(global);

        let mult = config.latency_distribution.sample(rand);
        let range = (config.max_message_latency - config.min_message_latency).as_millis() as f64;
        let delay = config.min_message_latency + Duration::from_millis((range * mult) as _);

        std::cmp::min(delay, config.max_message_latency)
    }

    fn latency(&mut self, global: &config::Latency) -> &mut config::Latency {
        self.config.latency.get_or_insert_with(|| global.clone())
    }

    fn message_loss(&mut self, global: &config::MessageLoss) -> &mut config::MessageLoss {
        self.config
            .message_loss
            .get_or_insert_with(|| global.clone())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Link;

    use super::*;

    #[test]
    #[should_panic(expected = "unable to find link between Pair(10.0.0.1, 192.168.0.1)")]
    fn link_access_gives_useful_panic_message() {
        let mut topo = Topology::new(Link::default());
        topo.hold("10.0.0.1".parse().unwrap(), "192.168.0.1".parse().unwrap());
    }
}

#[cfg(test)]
mod lazy_links {
    use super::*;

    /// connsim patch: links made on first use are keyed as turmoil's eager
    /// registration indexed them (host k's links to hosts 0..k, in order,
    /// after every earlier host's), so walks over links keep their order.
    #[test]
    fn keys_are_the_eager_registration_order() {
        let mut top = Topology::new(config::Link::default());
        // Registered out of address order, as worlds register them.
        let hosts: Vec<IpAddr> = [5, 2, 6, 1, 4, 3].map(|i| IpAddr::from([10, 0, 0, i])).to_vec();
        let mut eager = Vec::new();
        for (k, host) in hosts.iter().enumerate() {
            top.register(*host);
            eager.extend(hosts[..k].iter().map(|earlier| Pair::new(*earlier, *host)));
        }
        // Used in reverse order, keyed in registration order.
        for pair in eager.iter().rev() {
            top.get_link_mut(pair);
        }
        let walked: Vec<(u64, Pair)> = top.links.iter().map(|(key, (pair, _))| (*key, pair.clone())).collect();
        let expected: Vec<(u64, Pair)> = eager.into_iter().enumerate().map(|(i, p)| (i as u64, p)).collect();
        assert_eq!(walked, expected);
    }

    #[test]
    fn a_link_to_an_unknown_host_is_refused() {
        let mut top = Topology::new(config::Link::default());
        top.register(IpAddr::from([10, 0, 0, 1]));
        let (known, unknown): (SocketAddr, SocketAddr) = ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap());
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(1);
        for (src, dst) in [(known, unknown), (unknown, known)] {
            let message = Protocol::Udp(crate::envelope::Datagram(Default::default()));
            let sent = top.enqueue_message(&mut rng, src, dst, message);
            assert_eq!(sent.map_err(|e| e.kind()), Err(ErrorKind::ConnectionRefused));
        }
        assert!(top.links.is_empty());
    }
}
