//! The `github` connector: list and create issues through the GitHub REST API.
//!
//! It declares an API key sent as `Authorization: Bearer <token>` for `api.github.com`; the
//! host adds that header, so this code never handles the token.

use airlock_sdk::prelude::*;
use serde::de::IgnoredAny;

const API: &str = "https://api.github.com";

pub struct Github;

impl Connector for Github {
    fn definition() -> Definition {
        Definition::new("github", env!("CARGO_PKG_VERSION"))
            .description("GitHub issues")
            .auth(Auth::api_key_header("Authorization").prefix("Bearer "))
            .host("api.github.com")
            .action(
                Action::new("list_issues", list_issues)
                    .description("List a repository's issues (pull requests included, flagged)")
                    .timeout_ms(10_000)
                    .retry(Retry::attempts(3)),
            )
            .action(
                // No retry policy: a retry after a timeout could open the issue twice.
                Action::new("create_issue", create_issue)
                    .description("Open an issue")
                    .timeout_ms(10_000),
            )
    }

    fn test_connection(cx: &Context) -> Result<(), ConnectorError> {
        let user: User = send(get(cx, format!("{API}/user")))?.json()?;
        cx.log()
            .info(format_args!("authenticated as {}", user.login));
        Ok(())
    }
}

airlock_sdk::export_connector!(Github);

/// GitHub owner and repository names; also keeps `..` and `/` out of the URL path.
const NAME_PATTERN: &str = r"^[A-Za-z0-9_.-]+$";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListIssues {
    #[schemars(pattern(NAME_PATTERN))]
    pub owner: String,
    #[schemars(pattern(NAME_PATTERN))]
    pub repo: String,
    /// Defaults to `open`.
    #[serde(default)]
    pub state: Option<StateFilter>,
    /// Only issues carrying all of these labels.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Results per page, 1-100 (GitHub's default is 30).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    pub per_page: Option<u8>,
    /// Page number, starting at 1.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub page: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateFilter {
    Open,
    Closed,
    All,
}

impl StateFilter {
    fn as_str(self) -> &'static str {
        match self {
            StateFilter::Open => "open",
            StateFilter::Closed => "closed",
            StateFilter::All => "all",
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIssue {
    #[schemars(pattern(NAME_PATTERN))]
    pub owner: String,
    #[schemars(pattern(NAME_PATTERN))]
    pub repo: String,
    #[schemars(length(min = 1))]
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
}

/// An issue as this connector reports it: the fields a workflow needs, flattened.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Issue {
    pub number: u64,
    pub title: String,
    /// `open` or `closed`.
    pub state: String,
    pub html_url: String,
    /// The author's login; `null` when GitHub no longer knows the account.
    pub user: Option<String>,
    /// Label names.
    pub labels: Vec<String>,
    /// The issues API also returns pull requests; this tells them apart.
    pub is_pull_request: bool,
}

fn list_issues(cx: &Context, input: ListIssues) -> Result<Vec<Issue>, ConnectorError> {
    let owner = path_segment("owner", &input.owner)?;
    let repo = path_segment("repo", &input.repo)?;
    let mut request = get(cx, format!("{API}/repos/{owner}/{repo}/issues"));
    if let Some(state) = input.state {
        request = request.query("state", state.as_str());
    }
    if let Some(labels) = input.labels.filter(|l| !l.is_empty()) {
        request = request.query("labels", labels.join(","));
    }
    if let Some(per_page) = input.per_page {
        request = request.query("per_page", per_page.clamp(1, 100));
    }
    if let Some(page) = input.page {
        request = request.query("page", page.max(1));
    }
    let issues: Vec<ApiIssue> = send(request)?.json()?;
    cx.log()
        .debug(format_args!("{owner}/{repo}: {} issues", issues.len()));
    Ok(issues.into_iter().map(Issue::from).collect())
}

fn create_issue(cx: &Context, input: CreateIssue) -> Result<Issue, ConnectorError> {
    let owner = path_segment("owner", &input.owner)?;
    let repo = path_segment("repo", &input.repo)?;
    if input.title.trim().is_empty() {
        return Err(ConnectorError::invalid_input("title must not be empty"));
    }
    let body = NewIssue {
        title: &input.title,
        body: input.body.as_deref(),
        labels: input.labels.as_deref(),
    };
    let request =
        with_headers(cx.http().post(format!("{API}/repos/{owner}/{repo}/issues"))).json(&body);
    let issue: ApiIssue = send(request)?.json()?;
    Ok(issue.into())
}

/// Checks a name before it goes into a URL path. The host validates input against the
/// schema's pattern too, but the connector must not depend on that for its URL's shape.
fn path_segment<'a>(field: &str, value: &'a str) -> Result<&'a str, ConnectorError> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && value.chars().any(|c| c != '.');
    if ok {
        Ok(value)
    } else {
        Err(ConnectorError::invalid_input(format_args!(
            "{field} {value:?} is not a GitHub name (letters, digits, '-', '_', '.')"
        )))
    }
}

fn get<'a>(cx: &'a Context, url: String) -> airlock_sdk::RequestBuilder<'a> {
    with_headers(cx.http().get(url))
}

fn with_headers(request: airlock_sdk::RequestBuilder<'_>) -> airlock_sdk::RequestBuilder<'_> {
    request
        .header("accept", "application/vnd.github+json")
        .header("user-agent", "airlock-connector-github")
        .header("x-github-api-version", "2022-11-28")
}

/// Sends and checks the status. GitHub signals an exhausted rate limit with 403 (or 429) and
/// `x-ratelimit-remaining: 0`; that is a wait, not a bad credential.
fn send(request: airlock_sdk::RequestBuilder<'_>) -> Result<Response, ConnectorError> {
    let response = request.send()?;
    let exhausted = matches!(response.status(), 403 | 429)
        && response.header("x-ratelimit-remaining") == Some("0");
    if exhausted {
        let reset = response.header("x-ratelimit-reset").unwrap_or("unknown");
        return Err(ConnectorError::rate_limited(format_args!(
            "GitHub rate limit exhausted; resets at unix time {reset}"
        )));
    }
    response.error_for_status()
}

#[derive(Serialize)]
struct NewIssue<'a> {
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a [String]>,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

/// The subset of GitHub's issue object this connector reads.
#[derive(Deserialize)]
struct ApiIssue {
    number: u64,
    title: String,
    state: String,
    html_url: String,
    user: Option<User>,
    #[serde(default)]
    labels: Vec<ApiLabel>,
    pull_request: Option<IgnoredAny>,
}

/// GitHub documents a label as either an object or a bare name.
#[derive(Deserialize)]
#[serde(untagged)]
enum ApiLabel {
    Object { name: String },
    Name(String),
}

impl From<ApiIssue> for Issue {
    fn from(issue: ApiIssue) -> Issue {
        Issue {
            number: issue.number,
            title: issue.title,
            state: issue.state,
            html_url: issue.html_url,
            user: issue.user.map(|u| u.login),
            labels: issue
                .labels
                .into_iter()
                .map(|l| match l {
                    ApiLabel::Object { name } | ApiLabel::Name(name) => name,
                })
                .collect(),
            is_pull_request: issue.pull_request.is_some(),
        }
    }
}

#[cfg(test)]
mod tests;
