//! MQTT topic names and filters: validation, matching, and the subscription tree.
//!
//! Rules (MQTT 3.1.1 §4.7, 5.0 §4.7): levels are separated by `/`; `+` matches exactly one level
//! and must occupy a whole level; `#` matches any number of levels (including none) and must be
//! the last level, alone; topic names (in PUBLISH) contain no wildcards; a filter starting with a
//! wildcard does not match topic names starting with `$`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use aos_core::topic::{MAX_TOPIC_LEN, valid_topic_filter};

/// A valid topic name for PUBLISH: non-empty, no wildcards, no NUL.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_LEN && !topic.contains(['+', '#', '\0'])
}

/// A subscription's filter, possibly shared among a group (`$share/{group}/{filter}`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionFilter {
    pub group: Option<String>,
    pub filter: String,
}

/// Why a filter was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterError {
    Invalid,
    /// `$share/...` where shared subscriptions are not allowed (MQTT 3.1.1 has none).
    SharedNotSupported,
}

impl SubscriptionFilter {
    /// Parses `filter`; `allow_shared` says whether `$share/` names a shared subscription.
    pub fn parse(filter: &str, allow_shared: bool) -> Result<SubscriptionFilter, FilterError> {
        if let Some(rest) = filter.strip_prefix("$share/") {
            if !allow_shared {
                return Err(FilterError::SharedNotSupported);
            }
            let (group, inner) = rest.split_once('/').ok_or(FilterError::Invalid)?;
            if group.is_empty() || group.contains(['+', '#']) || !valid_topic_filter(inner) {
                return Err(FilterError::Invalid);
            }
            return Ok(SubscriptionFilter {
                group: Some(group.to_string()),
                filter: inner.to_string(),
            });
        }
        if valid_topic_filter(filter) {
            Ok(SubscriptionFilter {
                group: None,
                filter: filter.to_string(),
            })
        } else {
            Err(FilterError::Invalid)
        }
    }
}

/// Whether `topic` matches `filter` (both assumed valid).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The members of one shared subscription (`$share/{group}/{filter}`); each message goes to one.
pub struct SharedGroup<K, V> {
    /// Its filter (with the group's name).
    pub filter: SubscriptionFilter,
    pub members: HashMap<K, V>,
    turn: AtomicUsize,
}

impl<K, V> SharedGroup<K, V> {
    fn new(filter: &SubscriptionFilter) -> Self {
        SharedGroup {
            filter: filter.clone(),
            members: HashMap::new(),
            turn: AtomicUsize::new(0),
        }
    }

    /// The next member in turn among those `eligible` accepts (round robin), if any.
    pub fn pick(&self, eligible: impl Fn(&K, &V) -> bool) -> Option<(&K, &V)> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        // HashMap iteration order is stable while the map is unchanged.
        let members: Vec<(&K, &V)> = self.members.iter().collect();
        (0..n)
            .map(|i| members[(start + i) % n])
            .find(|(k, v)| eligible(k, v))
    }
}

/// One level of the subscription tree.
struct Node<K, V> {
    /// Boxed: a device's own topic levels are a node each with one child, and a map holding
    /// whole nodes inline costs several times a node for every such level.
    children: HashMap<Box<str>, Box<Node<K, V>>>,
    /// Plain subscribers whose filter ends at this level.
    subscribers: HashMap<K, V>,
    /// Shared subscriptions whose filter ends here, by group.
    groups: HashMap<Box<str>, SharedGroup<K, V>>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            subscribers: HashMap::new(),
            groups: HashMap::new(),
        }
    }
}

impl<K, V> Node<K, V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }
}

/// What a topic matched: plain subscribers, and shared groups (one member of each is chosen by
/// the caller).
pub trait MatchSink<'a, K, V> {
    /// The plain subscribers of one matching filter, each key once.
    fn subscribers(&mut self, subscribers: &'a HashMap<K, V>);
    fn group(&mut self, group: &'a SharedGroup<K, V>);
}

/// Subscriptions indexed by filter level, so a publish visits only the branches its topic can
/// match instead of every subscription.
pub struct SubscriptionTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

impl<K, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        SubscriptionTree {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V> SubscriptionTree<K, V> {
    /// Subscriptions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds or replaces `key`'s subscription to `filter`; returns the replaced value.
    pub fn insert(&mut self, filter: &SubscriptionFilter, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in filter.filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let slot = match &filter.group {
            Some(group) => {
                &mut node
                    .groups
                    .entry(group.as_str().into())
                    .or_insert_with(|| SharedGroup::new(filter))
                    .members
            }
            None => &mut node.subscribers,
        };
        let old = slot.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `key`'s subscription to `filter`; returns it if there was one.
    pub fn remove(&mut self, filter: &SubscriptionFilter, key: &K) -> Option<V> {
        let levels: Vec<&str> = filter.filter.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, filter.group.as_deref(), key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// The members of the shared subscription `filter` (which names a group), if any.
    pub fn group(&self, filter: &SubscriptionFilter) -> Option<&SharedGroup<K, V>> {
        let mut node = &self.root;
        for level in filter.filter.split('/') {
            node = node.children.get(level)?;
        }
        node.groups.get(filter.group.as_deref()?)
    }

    /// Calls `sink` for every subscription matching `topic`.
    pub fn for_each_match<'a>(&'a self, topic: &str, sink: &mut impl MatchSink<'a, K, V>) {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        walk(&self.root, &levels, dollar, sink);
    }
}

fn remove_at<K: Hash + Eq, V>(
    node: &mut Node<K, V>,
    levels: &[&str],
    group: Option<&str>,
    key: &K,
) -> Option<V> {
    match levels.split_first() {
        None => match group {
            None => node.subscribers.remove(key),
            Some(group) => {
                let shared = node.groups.get_mut(group)?;
                let removed = shared.members.remove(key);
                if shared.members.is_empty() {
                    node.groups.remove(group);
                }
                removed
            }
        },
        Some((level, rest)) => {
            let child = node.children.get_mut(*level)?;
            let removed = remove_at(child, rest, group, key);
            if child.is_empty() {
                node.children.remove(*level);
            }
            removed
        }
    }
}

fn emit<'a, K, V>(node: &'a Node<K, V>, sink: &mut impl MatchSink<'a, K, V>) {
    if !node.subscribers.is_empty() {
        sink.subscribers(&node.subscribers);
    }
    for shared in node.groups.values() {
        sink.group(shared);
    }
}

fn walk<'a, K, V>(
    node: &'a Node<K, V>,
    levels: &[&str],
    at_dollar_root: bool,
    sink: &mut impl MatchSink<'a, K, V>,
) {
    // `#` matches the rest, including nothing; wildcards never match a leading `$` level.
    if !at_dollar_root && let Some(hash) = node.children.get("#") {
        emit(hash, sink);
    }
    let Some((level, rest)) = levels.split_first() else {
        emit(node, sink);
        return;
    };
    if let Some(child) = node.children.get(*level) {
        walk(child, rest, false, sink);
    }
    if !at_dollar_root && let Some(plus) = node.children.get("+") {
        walk(plus, rest, false, sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_filters_are_validated() {
        assert!(valid_topic_name("a/b/c"));
        assert!(valid_topic_name("/"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/+/c"));
        assert!(!valid_topic_name("a/#"));
        assert!(valid_topic_filter("#"));
        assert!(valid_topic_filter("+/+"));
        assert!(valid_topic_filter("a/+/c/#"));
        assert!(!valid_topic_filter("a/#/c"));
        assert!(!valid_topic_filter("a/b#"));
        assert!(!valid_topic_filter("a+/b"));
        assert!(!valid_topic_filter(""));
    }

    #[test]
    fn shared_filters_parse() {
        assert_eq!(
            SubscriptionFilter::parse("$share/g1/a/+", true),
            Ok(SubscriptionFilter {
                group: Some("g1".into()),
                filter: "a/+".into()
            })
        );
        assert_eq!(
            SubscriptionFilter::parse("$share/g1/a/+", false),
            Err(FilterError::SharedNotSupported)
        );
        assert_eq!(
            SubscriptionFilter::parse("$share/g1", true),
            Err(FilterError::Invalid)
        );
        assert_eq!(
            SubscriptionFilter::parse("$share//a", true),
            Err(FilterError::Invalid)
        );
        assert_eq!(
            SubscriptionFilter::parse("$share/g+/a", true),
            Err(FilterError::Invalid)
        );
    }

    #[test]
    fn matching_follows_the_specification_examples() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }

    struct Collect(Vec<(u32, u8)>, Vec<String>);

    impl<'a> MatchSink<'a, u32, u8> for Collect {
        fn subscribers(&mut self, subscribers: &'a HashMap<u32, u8>) {
            self.0.extend(subscribers.iter().map(|(k, v)| (*k, *v)));
        }
        fn group(&mut self, group: &'a SharedGroup<u32, u8>) {
            let mut keys: Vec<_> = group.members.keys().collect();
            keys.sort();
            self.1.push(format!("{keys:?}"));
        }
    }

    fn plain(f: &str) -> SubscriptionFilter {
        SubscriptionFilter::parse(f, true).expect("valid")
    }

    fn matched(tree: &SubscriptionTree<u32, u8>, topic: &str) -> (Vec<(u32, u8)>, Vec<String>) {
        let mut c = Collect(Vec::new(), Vec::new());
        tree.for_each_match(topic, &mut c);
        c.0.sort();
        c.1.sort();
        (c.0, c.1)
    }

    #[test]
    fn the_tree_agrees_with_matches() {
        let filters = [
            "#", "+", "a/#", "a/+", "a/b", "a/+/c", "+/b/#", "$SYS/#", "$SYS/+", "/+", "a/b/c/#",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "a/x/c", "b/b", "$SYS/x", "/x", "a/b/c/d", "$SYS",
        ];
        let mut tree = SubscriptionTree::default();
        for (i, f) in filters.iter().enumerate() {
            tree.insert(&plain(f), i as u32, 0);
        }
        assert_eq!(tree.len(), filters.len());
        for topic in topics {
            let expected: Vec<(u32, u8)> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| matches(f, topic))
                .map(|(i, _)| (i as u32, 0))
                .collect();
            assert_eq!(matched(&tree, topic).0, expected, "topic {topic}");
        }
    }

    #[test]
    fn a_shared_group_takes_turns_and_skips_ineligible_members() {
        let filter = SubscriptionFilter::parse("$share/g/a", true).expect("filter");
        let mut group = SharedGroup::new(&filter);
        for k in [1u32, 2, 3] {
            group.members.insert(k, ());
        }
        let picks: Vec<u32> = (0..6)
            .map(|_| *group.pick(|_, _| true).expect("pick").0)
            .collect();
        for k in [1, 2, 3] {
            assert_eq!(picks.iter().filter(|p| **p == k).count(), 2, "{picks:?}");
        }
        assert_eq!(group.pick(|k, _| *k == 2).map(|(k, _)| *k), Some(2));
        assert!(group.pick(|_, _| false).is_none());
    }

    #[test]
    fn insert_replaces_and_remove_prunes() {
        let mut tree = SubscriptionTree::default();
        assert_eq!(tree.insert(&plain("a/b"), 1, 0), None);
        assert_eq!(tree.insert(&plain("a/b"), 1, 2), Some(0));
        assert_eq!(matched(&tree, "a/b").0, vec![(1, 2)]);
        tree.insert(&plain("$share/g/a/+"), 1, 1);
        tree.insert(&plain("$share/g/a/+"), 2, 1);
        assert_eq!(matched(&tree, "a/b").1, vec!["[1, 2]".to_string()]);
        assert_eq!(tree.remove(&plain("a/b"), &1), Some(2));
        assert_eq!(tree.remove(&plain("a/b"), &1), None);
        tree.remove(&plain("$share/g/a/+"), &1);
        tree.remove(&plain("$share/g/a/+"), &2);
        assert!(tree.is_empty());
        assert!(tree.root.is_empty(), "empty branches are pruned");
    }
}
