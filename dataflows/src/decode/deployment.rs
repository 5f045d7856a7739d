//! Which deployment a pod belongs to.
//!
//! Labels win when present (`deployment`, `app`, `app.kubernetes.io/name`,
//! in that order). Otherwise the name is read the way Kubernetes builds it:
//! a Deployment's pods are `<deployment>-<pod-template-hash>-<suffix>`, a
//! StatefulSet's `<name>-<ordinal>`, a DaemonSet's or Job's
//! `<name>-<suffix>`.

/// Characters Kubernetes uses for generated hashes (no vowels, no digits
/// that look like letters), so `store` in `checkout-store-x2x9q` is not
/// mistaken for a ReplicaSet hash.
const HASH_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn is_pod_suffix(segment: &str) -> bool {
    segment.len() == 5 && segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn is_template_hash(segment: &str) -> bool {
    (5..=10).contains(&segment.len()) && segment.bytes().all(|b| HASH_ALPHABET.contains(&b))
}

fn is_ordinal(segment: &str) -> bool {
    !segment.is_empty() && segment.len() <= 5 && segment.bytes().all(|b| b.is_ascii_digit())
}

/// The deployment a pod name belongs to, by dropping the ReplicaSet hash
/// and pod suffix (`checkout-7d9f8-abcde` → `checkout`), a StatefulSet
/// ordinal (`web-0` → `web`) or a lone generated suffix. A name that fits
/// none of these is its own deployment.
pub fn from_pod_name(pod: &str) -> &str {
    let mut parts = pod.rsplitn(3, '-');
    let last = parts.next().unwrap_or(pod);
    let middle = parts.next();
    let rest = parts.next();
    match (middle, rest) {
        (Some(hash), Some(name)) if is_pod_suffix(last) && is_template_hash(hash) && !name.is_empty() => name,
        (Some(_), _) if is_pod_suffix(last) || is_ordinal(last) => {
            // Drop only the last segment.
            let cut = pod.len() - last.len() - 1;
            if cut == 0 { pod } else { &pod[..cut] }
        }
        _ => pod,
    }
}

/// The deployment from a label set, in order of preference.
pub fn from_labels<'a>(
    deployment: Option<&'a str>,
    app: Option<&'a str>,
    app_name: Option<&'a str>,
) -> Option<&'a str> {
    [deployment, app, app_name].into_iter().flatten().find(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_of_each_workload_kind() {
        assert_eq!(from_pod_name("checkout-7d9f8-abcde"), "checkout");
        assert_eq!(from_pod_name("api-gateway-5c9d7b8f6-x2x9q"), "api-gateway");
        assert_eq!(from_pod_name("web-0"), "web");
        assert_eq!(from_pod_name("redis-cluster-12"), "redis-cluster");
        assert_eq!(from_pod_name("fluentd-x2x9q"), "fluentd");
        assert_eq!(from_pod_name("checkout-store-x2x9q"), "checkout-store");
        assert_eq!(from_pod_name("standalone"), "standalone");
        assert_eq!(from_pod_name("-abcde"), "-abcde");
        assert_eq!(from_pod_name(""), "");
        assert_eq!(from_pod_name("a--abcde"), "a-");
    }

    #[test]
    fn labels_in_order_of_preference() {
        assert_eq!(from_labels(None, Some("shop"), Some("x")), Some("shop"));
        assert_eq!(from_labels(Some("d"), Some("shop"), None), Some("d"));
        assert_eq!(from_labels(Some(""), None, Some("n")), Some("n"));
        assert_eq!(from_labels(None, None, None), None);
    }
}
