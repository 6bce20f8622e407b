//! Which node a new meeting goes to.

use super::ids::NodeId;
use super::node::Load;

/// The node a new meeting is placed on, among the live ones with their loads: the one with
/// the fewest meetings, then the fewest participants; nodes at their capacity only when all
/// are, and nodes being taken out of service (draining) only when all are; among equals the
/// smallest id, so that every node that sees the same loads makes the same choice. `None`
/// when there is no candidate.
pub fn choose_node(candidates: &[(NodeId, Load)]) -> Option<&NodeId> {
    candidates
        .iter()
        .min_by(|(a_id, a), (b_id, b)| {
            (a.draining, a.is_full(), a.meetings, a.participants, a_id).cmp(&(
                b.draining,
                b.is_full(),
                b.meetings,
                b.participants,
                b_id,
            ))
        })
        .map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeId {
        NodeId::new(s).expect("id")
    }

    fn load(meetings: u32, participants: u32, capacity: Option<u32>) -> Load {
        Load {
            meetings,
            participants,
            capacity,
            draining: false,
        }
    }

    fn draining(meetings: u32, participants: u32) -> Load {
        Load {
            draining: true,
            ..load(meetings, participants, None)
        }
    }

    #[test]
    fn nobody_to_choose() {
        assert_eq!(choose_node(&[]), None);
    }

    #[test]
    fn fewest_meetings_first() {
        let c = [
            (n("a"), load(3, 1, None)),
            (n("b"), load(1, 50, None)),
            (n("c"), load(2, 0, None)),
        ];
        assert_eq!(choose_node(&c), Some(&n("b")));
    }

    #[test]
    fn then_fewest_participants() {
        let c = [(n("a"), load(2, 9, None)), (n("b"), load(2, 8, None))];
        assert_eq!(choose_node(&c), Some(&n("b")));
    }

    #[test]
    fn ties_go_to_the_smallest_id_whatever_the_order() {
        let mut c = vec![
            (n("node-c"), load(1, 1, None)),
            (n("node-a"), load(1, 1, None)),
            (n("node-b"), load(1, 1, None)),
        ];
        for _ in 0..3 {
            assert_eq!(choose_node(&c), Some(&n("node-a")));
            c.rotate_left(1);
        }
    }

    #[test]
    fn full_nodes_last() {
        let c = [
            (n("a"), load(0, 100, Some(100))),
            (n("b"), load(5, 40, Some(100))),
        ];
        assert_eq!(choose_node(&c), Some(&n("b")));
        let all_full = [
            (n("a"), load(0, 100, Some(100))),
            (n("b"), load(5, 100, Some(90))),
        ];
        assert_eq!(choose_node(&all_full), Some(&n("a")));
    }

    #[test]
    fn draining_nodes_only_when_every_node_drains() {
        // Empty and idle, but being taken out of service: the busy full node gets it.
        let c = [(n("a"), draining(0, 0)), (n("b"), load(9, 120, Some(100)))];
        assert_eq!(choose_node(&c), Some(&n("b")));
        let c = [(n("a"), draining(0, 0)), (n("b"), load(9, 80, None))];
        assert_eq!(choose_node(&c), Some(&n("b")));
        // Every node drains: the least busy of them (a meeting must run somewhere).
        let all = [(n("a"), draining(3, 30)), (n("b"), draining(1, 50))];
        assert_eq!(choose_node(&all), Some(&n("b")));
    }

    #[test]
    fn placing_one_by_one_spreads_evenly() {
        // Twenty meetings onto three nodes, each placement seeing the ones before it.
        let mut c = vec![
            (n("a"), Load::default()),
            (n("b"), Load::default()),
            (n("c"), Load::default()),
        ];
        for _ in 0..20 {
            let chosen = choose_node(&c).expect("a node").clone();
            let entry = c.iter_mut().find(|(id, _)| *id == chosen).expect("listed");
            entry.1.meetings += 1;
        }
        let counts: Vec<u32> = c.iter().map(|(_, l)| l.meetings).collect();
        assert_eq!(counts, vec![7, 7, 6]);
    }
}
