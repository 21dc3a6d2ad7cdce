//! The owning workload of a pod, from its name (and its labels when the runtime keeps them),
//! without asking the API server.
//!
//! Kubernetes controllers name their pods in fixed shapes. `generateName` suffixes and the
//! ReplicaSet's `pod-template-hash` are drawn from one "safe" alphabet without vowels and
//! look-alikes (`k8s.io/apimachinery/pkg/util/rand`: `bcdfghjklmnpqrstvwxz2456789`):
//!
//! | owner        | pod name                                   | example                         |
//! |--------------|--------------------------------------------|---------------------------------|
//! | Deployment   | `<deploy>-<rs hash: 6–10 safe>-<5 safe>`   | `cart-7d9f8b6c5d-x2k4q` → `cart` |
//! | CronJob      | `<cronjob>-<8+ digits>-<5 safe>`           | `nightly-28912345-5wz7k`         |
//! | StatefulSet  | `<name>-<ordinal>`                         | `redis-0`, `kafka-12`            |
//! | DaemonSet    | `<name>-<5 safe>`                          | `kube-proxy-7xk2p`               |
//! | Pod          | anything else: the pod is its own workload | `debug`                          |
//!
//! Ambiguities of names alone, and the rule picked:
//! - `<name>-<5 safe>` is what a DaemonSet, a Job (not from a CronJob), a bare ReplicaSet and any
//!   `generateName` pod all produce. We say **DaemonSet**: every node runs several (CNI, proxies,
//!   agents) and they talk all the time, while Jobs are short. The workload *name* is right in
//!   all four cases; only the kind may be wrong.
//! - A 5-character suffix made only of the alphabet's digits (`web-24567`) could be a StatefulSet
//!   ordinal; ordinals that large are rarer than such a suffix (≈0.1 % of suffixes), so it is
//!   read as the 5-character rule. Ordinals have no leading zero (`web-01` is not one).
//! - A DaemonSet or StatefulSet whose own name ends in a 6–10 character safe-alphabet word
//!   (`web-bcdfgh-x2k4q`) reads as a Deployment called `web`.
//! - A CronJob's Job is `<cronjob>-<scheduled time in minutes since the epoch>` (8 digits
//!   today). An all-digit middle part of 8–10 characters drawn from `2456789` could also be a
//!   ReplicaSet hash; it is read as a CronJob, as an all-digit hash is rare ((7/27)^8).
//!
//! When the runtime keeps the pod's labels (CRI-O's sandbox `io.kubernetes.cri-o.Labels`), they
//! decide instead: `pod-template-hash` → Deployment; `controller-revision-hash` with
//! `statefulset.kubernetes.io/pod-name` → StatefulSet, with `pod-template-generation` →
//! DaemonSet; `batch.kubernetes.io/job-name` (or `job-name`) → Job, or its CronJob when the Job's
//! name has the CronJob shape; a 5-character suffix without any of these → ReplicaSet.

use std::collections::BTreeMap;

/// What owns a pod, as far as its name and labels tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    ReplicaSet,
    /// A bare pod: it is its own workload.
    Pod,
}

impl OwnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::Deployment => "Deployment",
            OwnerKind::StatefulSet => "StatefulSet",
            OwnerKind::DaemonSet => "DaemonSet",
            OwnerKind::Job => "Job",
            OwnerKind::CronJob => "CronJob",
            OwnerKind::ReplicaSet => "ReplicaSet",
            OwnerKind::Pod => "Pod",
        }
    }
}

/// The owning workload: its kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: OwnerKind,
    pub name: String,
}

const SAFE_ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";

fn is_safe(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| SAFE_ALPHABET.contains(c))
}

/// `generateName`'s random suffix: 5 characters of the safe alphabet.
fn is_suffix(s: &str) -> bool {
    s.len() == 5 && is_safe(s)
}

fn is_rs_hash(s: &str) -> bool {
    (6..=10).contains(&s.len()) && is_safe(s)
}

/// A CronJob's Job suffix: minutes since the epoch, 8 digits or more.
fn is_cron_time(s: &str) -> bool {
    s.len() >= 8 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_ordinal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

/// Splits `a-b` at its last dash, with a non-empty left part.
fn split_last(s: &str) -> Option<(&str, &str)> {
    s.rsplit_once('-').filter(|(head, _)| !head.is_empty())
}

/// The owner of a pod from its name alone (the rules and ambiguities are in the module doc).
pub fn owner_from_name(pod: &str) -> Owner {
    let owner = |kind, name: &str| Owner {
        kind,
        name: name.to_string(),
    };
    let Some((head, last)) = split_last(pod) else {
        return owner(OwnerKind::Pod, pod);
    };
    if is_suffix(last) {
        if let Some((base, middle)) = split_last(head) {
            // Digits first: an 8–10 digit word from the alphabet's digits is also a "hash".
            if is_cron_time(middle) {
                return owner(OwnerKind::CronJob, base);
            }
            if is_rs_hash(middle) {
                return owner(OwnerKind::Deployment, base);
            }
        }
        return owner(OwnerKind::DaemonSet, head);
    }
    if is_ordinal(last) {
        return owner(OwnerKind::StatefulSet, head);
    }
    owner(OwnerKind::Pod, pod)
}

/// The owner of a pod from its name and its labels; labels win when they say something.
pub fn owner_from_labels(pod: &str, labels: &BTreeMap<String, String>) -> Owner {
    let has = |k: &str| labels.contains_key(k);
    let by_name = owner_from_name(pod);
    let strip = |kind, suffix_len: usize| Owner {
        kind,
        name: pod
            .get(..pod.len().saturating_sub(suffix_len + 1))
            .unwrap_or(pod)
            .to_string(),
    };
    if let Some(hash) = labels.get("pod-template-hash") {
        // `<deploy>-<hash>-<5>`: the hash is known, so no guessing at its length.
        let tail = format!("-{hash}-");
        if let Some(at) = pod.rfind(&tail).filter(|&at| at > 0) {
            return Owner {
                kind: OwnerKind::Deployment,
                name: pod[..at].to_string(),
            };
        }
        return Owner {
            kind: OwnerKind::Deployment,
            ..by_name
        };
    }
    if has("controller-revision-hash") && has("statefulset.kubernetes.io/pod-name") {
        let ordinal = pod.rsplit_once('-').map_or(0, |(_, o)| o.len());
        return strip(OwnerKind::StatefulSet, ordinal);
    }
    if has("controller-revision-hash") && has("pod-template-generation") {
        return strip(OwnerKind::DaemonSet, 5);
    }
    if let Some(job) = labels
        .get("batch.kubernetes.io/job-name")
        .or_else(|| labels.get("job-name"))
    {
        if let Some((cron, time)) = split_last(job)
            && is_cron_time(time)
        {
            return Owner {
                kind: OwnerKind::CronJob,
                name: cron.to_string(),
            };
        }
        return Owner {
            kind: OwnerKind::Job,
            name: job.clone(),
        };
    }
    if by_name.kind == OwnerKind::DaemonSet {
        // Labels are known and name none of the controllers that use a 5-character suffix.
        return Owner {
            kind: OwnerKind::ReplicaSet,
            ..by_name
        };
    }
    by_name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pod: &str, kind: OwnerKind, name: &str) {
        assert_eq!(
            owner_from_name(pod),
            Owner {
                kind,
                name: name.into()
            },
            "pod {pod}"
        );
    }

    #[test]
    fn deployment_pods_drop_both_hashes() {
        check("cart-7d9f8b6c5d-x2k4q", OwnerKind::Deployment, "cart");
        check("coredns-5d78c9869d-8qxzv", OwnerKind::Deployment, "coredns");
        check(
            "ingress-nginx-controller-6b7f5c4f8d-2lkwz",
            OwnerKind::Deployment,
            "ingress-nginx-controller",
        );
        // A 6-character hash (older clusters) and a 10-character one.
        check("api-6f7b9c-xk2lp", OwnerKind::Deployment, "api");
        check("api-bcdfghjklm-xk2lp", OwnerKind::Deployment, "api");
    }

    #[test]
    fn hash_lengths_and_alphabet_are_enforced() {
        // 11 characters is no ReplicaSet hash; 'a' and '1' are not in the alphabet.
        check(
            "api-bcdfghjklmn-xk2lp",
            OwnerKind::DaemonSet,
            "api-bcdfghjklmn",
        );
        check(
            "api-7d9f8a6c5d-x2k4q",
            OwnerKind::DaemonSet,
            "api-7d9f8a6c5d",
        );
        check(
            "api-7d9f8b6c5d-x2k1q",
            OwnerKind::Pod,
            "api-7d9f8b6c5d-x2k1q",
        );
    }

    #[test]
    fn cronjob_pods_drop_time_and_suffix() {
        check(
            "nightly-report-28912345-5wz7k",
            OwnerKind::CronJob,
            "nightly-report",
        );
        check("backup-2891234512-bq9xd", OwnerKind::CronJob, "backup");
        // Seven digits is not a CronJob schedule time.
        check("backup-2895244-bq9xd", OwnerKind::Deployment, "backup");
    }

    #[test]
    fn statefulset_ordinals() {
        check("redis-0", OwnerKind::StatefulSet, "redis");
        check("kafka-broker-12", OwnerKind::StatefulSet, "kafka-broker");
        check("web-01", OwnerKind::Pod, "web-01");
    }

    #[test]
    fn five_character_suffix_reads_as_daemonset() {
        check("kube-proxy-7xk2p", OwnerKind::DaemonSet, "kube-proxy");
        check("aws-node-vzq8m", OwnerKind::DaemonSet, "aws-node");
        // The documented ambiguity: a digit-only suffix from the alphabet is not an ordinal.
        check("fluent-bit-24567", OwnerKind::DaemonSet, "fluent-bit");
        // A Job's pod reads the same way; the name is right, the kind is the rule's.
        check("migrate-db-9fk2w", OwnerKind::DaemonSet, "migrate-db");
    }

    #[test]
    fn bare_pods_are_their_own_workload() {
        check("debug", OwnerKind::Pod, "debug");
        check("-x2k4q", OwnerKind::Pod, "-x2k4q");
        check("toolbox-shell", OwnerKind::Pod, "toolbox-shell");
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_settle_the_ambiguous_cases() {
        let job = labels(&[
            ("batch.kubernetes.io/job-name", "migrate-db"),
            ("job-name", "migrate-db"),
        ]);
        assert_eq!(
            owner_from_labels("migrate-db-9fk2w", &job),
            Owner {
                kind: OwnerKind::Job,
                name: "migrate-db".into()
            }
        );
        let cron = labels(&[("job-name", "nightly-28912345")]);
        assert_eq!(
            owner_from_labels("nightly-28912345-5wz7k", &cron).kind,
            OwnerKind::CronJob
        );
        let ds = labels(&[
            ("controller-revision-hash", "6d4b9c7f8"),
            ("pod-template-generation", "3"),
        ]);
        assert_eq!(
            owner_from_labels("kube-proxy-7xk2p", &ds),
            Owner {
                kind: OwnerKind::DaemonSet,
                name: "kube-proxy".into()
            }
        );
        let rs = labels(&[("app", "worker")]);
        assert_eq!(
            owner_from_labels("worker-7xk2p", &rs),
            Owner {
                kind: OwnerKind::ReplicaSet,
                name: "worker".into()
            }
        );
        let sts = labels(&[
            ("controller-revision-hash", "db-7c9f"),
            ("statefulset.kubernetes.io/pod-name", "db-24567"),
        ]);
        assert_eq!(
            owner_from_labels("db-24567", &sts),
            Owner {
                kind: OwnerKind::StatefulSet,
                name: "db".into()
            }
        );
    }

    #[test]
    fn pod_template_hash_label_gives_the_deployment_name_exactly() {
        // A hash the name rule would not accept (11 characters) is still cut exactly.
        let l = labels(&[("pod-template-hash", "bcdfghjklmn")]);
        assert_eq!(
            owner_from_labels("api-bcdfghjklmn-xk2lp", &l),
            Owner {
                kind: OwnerKind::Deployment,
                name: "api".into()
            }
        );
    }
}
