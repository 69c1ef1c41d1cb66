//! The function's routes: one table that the router matches every request
//! against (`find`), and that `tests/template.rs` compares with
//! `template.yaml`'s route keys and `openapi.yaml`'s paths. A route added to
//! the code is served and must be added to both; one added to either alone
//! fails that test.

use std::sync::LazyLock;

/// What answers a route (the router in [`crate::app`] knows each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /orders`, through the idempotency layer.
    CreateOrder,
    /// `GET /orders/{id}`.
    GetOrder,
    /// `GET /problems/{slug}`: a problem type's document.
    ProblemType,
}

/// One route: a method and a path template, in which `{name}` stands for
/// one non-empty path segment.
#[derive(Debug)]
pub struct Route {
    /// The HTTP method, upper case.
    pub method: &'static str,
    /// The path template, as `openapi.yaml` and the route keys write it.
    pub path: &'static str,
    pub(crate) endpoint: Endpoint,
}

/// Every route the function serves. Any other method on these paths
/// answers `405` with `Allow`; any other path `404`.
pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/orders",
        endpoint: Endpoint::CreateOrder,
    },
    Route {
        method: "GET",
        path: "/orders/{id}",
        endpoint: Endpoint::GetOrder,
    },
    Route {
        method: "GET",
        path: "/problems/{slug}",
        endpoint: Endpoint::ProblemType,
    },
];

/// How a request's method and path meet [`ROUTES`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Match<'a> {
    /// A route, and the value of its template's parameter, if it has one.
    Found(Endpoint, Option<&'a str>),
    /// A path some route has, but not with this method: the `Allow` value.
    WrongMethod(&'static str),
    /// No route has this path.
    NotFound,
}

/// The route for `method` (upper case, as HTTP sends it) and `path`.
pub(crate) fn find<'a>(method: &str, path: &'a str) -> Match<'a> {
    let mut known_path = None;
    for route in ROUTES {
        let Some(param) = fit(route.path, path) else {
            continue;
        };
        if route.method == method {
            return Match::Found(route.endpoint, param);
        }
        known_path = Some(route.path);
    }
    match known_path {
        Some(template) => Match::WrongMethod(allow(template)),
        None => Match::NotFound,
    }
}

/// Whether `path` fits `template`, segment by segment; if so, the value of
/// its (last) parameter.
fn fit<'a>(template: &str, path: &'a str) -> Option<Option<&'a str>> {
    let mut param = None;
    let (mut wanted, mut given) = (template.split('/'), path.split('/'));
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return Some(param),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                if g.is_empty() {
                    return None;
                }
                param = Some(g);
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

/// The methods of the routes whose template is `template`, as `Allow`
/// writes them. Made once.
fn allow(template: &str) -> &'static str {
    static ALLOW: LazyLock<Vec<(&str, String)>> = LazyLock::new(|| {
        let mut by_path: Vec<(&str, String)> = Vec::new();
        for route in ROUTES {
            match by_path.iter_mut().find(|(path, _)| *path == route.path) {
                Some((_, methods)) => {
                    methods.push_str(", ");
                    methods.push_str(route.method);
                }
                None => by_path.push((route.path, route.method.to_owned())),
            }
        }
        by_path
    });
    ALLOW
        .iter()
        .find(|(path, _)| *path == template)
        .map_or("", |(_, methods)| methods.as_str())
}

/// The detail of a `404`: the routes there are. Made once.
pub(crate) fn not_found_detail() -> &'static str {
    static DETAIL: LazyLock<String> = LazyLock::new(|| {
        let routes: Vec<String> = ROUTES
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        format!("No such route. Routes: {}.", routes.join(", "))
    });
    &DETAIL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_is_found_with_its_parameter() {
        assert_eq!(
            find("POST", "/orders"),
            Match::Found(Endpoint::CreateOrder, None)
        );
        assert_eq!(
            find("GET", "/orders/abc"),
            Match::Found(Endpoint::GetOrder, Some("abc"))
        );
        assert_eq!(
            find("GET", "/problems/route-not-found"),
            Match::Found(Endpoint::ProblemType, Some("route-not-found"))
        );
    }

    #[test]
    fn another_method_on_a_route_s_path_is_told_which_methods_it_has() {
        assert_eq!(find("GET", "/orders"), Match::WrongMethod("POST"));
        assert_eq!(find("DELETE", "/orders/abc"), Match::WrongMethod("GET"));
        assert_eq!(find("post", "/orders"), Match::WrongMethod("POST"));
        assert_eq!(find("POST", "/problems/x"), Match::WrongMethod("GET"));
    }

    #[test]
    fn paths_no_template_fits_are_not_found() {
        for path in [
            "/",
            "",
            "/orders/",
            "/orders/a/b",
            "//orders",
            "/orders/x/",
            "/problems",
            "/order",
            "/ordersx",
            "orders",
        ] {
            assert_eq!(find("GET", path), Match::NotFound, "{path:?}");
            assert_eq!(find("POST", path), Match::NotFound, "{path:?}");
        }
    }

    #[test]
    fn the_404_detail_lists_every_route() {
        assert_eq!(
            not_found_detail(),
            "No such route. Routes: POST /orders, GET /orders/{id}, GET /problems/{slug}."
        );
    }
}
