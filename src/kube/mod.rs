//! The Kubernetes control plane of prescale: the `PredictiveScaler`
//! resource ([`crd`]), which the CRD YAML is generated from.
//!
//! All Kubernetes I/O stays in this module and runs on a Tokio runtime owned
//! by the thread that does it, so the timely workers never block on the
//! network and a job without a Kubernetes sink never needs a cluster.

pub mod crd;
