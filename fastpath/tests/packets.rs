mod common;
use common::*;
use fastpath_common::Counter;

#[test]
fn probe() {
    let mut h = Harness::new("probe").unwrap();
    let f = build(&v4_frame(&invite(V4_NUMBER)));
    let (o, c) = h.run_counted(&f, None).unwrap();
    eprintln!("action {} counter {:?} same {}", o.action, c, o.frame == f);
    let f = build(&v4_frame(&invite(UNREGISTERED)));
    let t = std::time::Instant::now();
    for _ in 0..1000 {
        h.run_counted(&f, None).unwrap();
    }
    eprintln!("run_counted: {:?}/pkt", t.elapsed() / 1000);
    let t = std::time::Instant::now();
    for _ in 0..1000 {
        h.run(&f, None).unwrap();
    }
    eprintln!("run: {:?}/pkt", t.elapsed() / 1000);
    for n in [0usize, 13, 14, 15] {
        eprintln!(
            "len {n}: {:?}",
            h.run(&f[..n.min(f.len())], None).map(|o| o.action)
        );
    }
    let big = build(&v4_frame(&vec![b'x'; 3515]));
    eprintln!(
        "big: {:?}",
        h.run_counted(&big, None)
            .map(|(o, c)| (o.action, c, o.frame == big))
    );
    let big = build(&v4_frame(&vec![b'x'; 8000]));
    eprintln!(
        "bigger: {:?}",
        h.run_counted(&big, None)
            .map(|(o, c)| (o.action, c, o.frame == big))
    );
    let md = XdpMd {
        ingress_ifindex: 1,
        rx_queue_index: 0,
    };
    eprintln!(
        "ctx lo: {:?}",
        h.run_counted(&f, Some(md)).map(|(o, c)| (o.action, c))
    );
    let _ = Counter::Hit;
}
