//! `GET /v2/`: the API version check clients start with.

use crate::wire::message::Response;
use http::StatusCode;

pub fn get<S>() -> Response<S> {
    Response::new(StatusCode::OK).json(b"{}".to_vec())
}
