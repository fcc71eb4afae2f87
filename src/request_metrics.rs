//! Counts every request a kube client sends, by Kubernetes verb and HTTP status code, so
//! throttling (429), conflicts (409) and server errors (5xx) show in
//! `rampart_api_requests_total`. A tower layer on the client; it reads only the method, the
//! query and the response's status, never a body.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use prometheus::IntCounterVec;
use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The `code` label of a request that got no response (connection refused, timeout, TLS).
pub const NO_RESPONSE: &str = "none";

/// The Kubernetes verb of a request, as far as the method and query tell it: a GET is `watch`
/// when it asks to watch and `get` otherwise (lists included: the path alone cannot tell a
/// list of a cluster-scoped kind from a get of a namespaced object).
pub fn verb_of(method: &Method, query: Option<&str>) -> &'static str {
    match *method {
        Method::GET => {
            let watching = query.is_some_and(|q| {
                q.split('&')
                    .any(|kv| kv == "watch=true" || kv == "watch=1" || kv == "watch")
            });
            if watching {
                "watch"
            } else {
                "get"
            }
        }
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::HEAD => "head",
        _ => "other",
    }
}

/// Counts each request in `counter` (labels `verb`, `code`).
#[derive(Clone)]
pub struct RequestCountLayer(pub IntCounterVec);

impl<S> Layer<S> for RequestCountLayer {
    type Service = RequestCount<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestCount {
            inner,
            counter: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequestCount<S> {
    inner: S,
    counter: IntCounterVec,
}

impl<S, B, R> Service<Request<B>> for RequestCount<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let verb = verb_of(req.method(), req.uri().query());
        let counter = self.counter.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            let code = match &result {
                Ok(resp) => resp.status().as_u16().to_string(),
                Err(_) => NO_RESPONSE.to_string(),
            };
            counter.with_label_values(&[verb, code.as_str()]).inc();
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    /// Answers every request with the status its path names (`/409` → 409), or fails
    /// without a response for `/down`.
    #[derive(Clone)]
    struct Answers;

    impl Service<Request<()>> for Answers {
        type Response = Response<()>;
        type Error = std::io::Error;
        type Future = BoxFuture<'static, Result<Response<()>, std::io::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: Request<()>) -> Self::Future {
            let path = req.uri().path().trim_start_matches('/').to_string();
            Box::pin(async move {
                if path == "down" {
                    return Err(std::io::Error::other("connection refused"));
                }
                let code: u16 = path.parse().unwrap_or(200);
                let mut resp = Response::new(());
                *resp.status_mut() = http::StatusCode::from_u16(code).unwrap_or_default();
                Ok(resp)
            })
        }
    }

    fn request(method: Method, uri: &str) -> Request<()> {
        let mut r = Request::new(());
        *r.method_mut() = method;
        *r.uri_mut() = uri.parse().expect("a test uri");
        r
    }

    #[tokio::test]
    async fn throttling_conflicts_and_server_errors_are_counted_by_verb_and_code() {
        let counter = IntCounterVec::new(Opts::new("t", "t"), &["verb", "code"]).expect("opts");
        let mut svc = RequestCountLayer(counter.clone()).layer(Answers);
        for (method, uri) in [
            (Method::PATCH, "/429"),
            (Method::PATCH, "/429"),
            (Method::POST, "/409"),
            (Method::DELETE, "/503"),
            (Method::GET, "/200?watch=true&resourceVersion=1"),
            (Method::GET, "/200?labelSelector=a"),
            (Method::PUT, "/down"),
        ] {
            let _ = svc.call(request(method, uri)).await;
        }
        let n = |verb: &str, code: &str| counter.with_label_values(&[verb, code]).get();
        assert_eq!(n("patch", "429"), 2);
        assert_eq!(n("create", "409"), 1);
        assert_eq!(n("delete", "503"), 1);
        assert_eq!(n("watch", "200"), 1);
        assert_eq!(n("get", "200"), 1);
        assert_eq!(n("update", NO_RESPONSE), 1);
    }
}
