using System.Text;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// daprd's HTTP error bodies <c>{"errorCode","message"}</c> and the messages it uses
/// (dapr/dapr pkg/messages/predefined.go, pkg/messages/errorcodes/errorcodes.go).
/// </summary>
internal static class DaprErrors
{
    public static HttpReply Json(int status, string errorCode, string message)
    {
        // Go's encoding/json writes it: only <, > and & are escaped in strings.
        var body = Encoding.UTF8.GetBytes($"{{\"errorCode\":{GoJson.Quote(errorCode)},\"message\":{GoJson.Quote(message)}}}");
        return new HttpReply(status, body, "application/json");
    }

    // pkg/api/http/middlewares.go: http.Error(w, "invalid api token", 401) → text/plain body with a newline.
    public static HttpReply InvalidApiToken() =>
        new(401, Encoding.UTF8.GetBytes("invalid api token\n"), "text/plain; charset=utf-8");

    // chi's default NotFound handler (http.NotFound).
    public static HttpReply RouteNotFound() =>
        new(404, Encoding.UTF8.GetBytes("404 page not found\n"), "text/plain; charset=utf-8");

    public static HttpReply MethodNotAllowed() => new(405, null, null);

    public static HttpReply HealthNotReady() => Json(500, "ERR_HEALTH_NOT_READY", "dapr is not ready");

    public static HttpReply MalformedRequest(string detail) =>
        Json(400, "ERR_MALFORMED_REQUEST", $"failed deserializing HTTP body: {detail}");

    public static HttpReply ActorInvoke(string detail) =>
        Json(500, "ERR_ACTOR_INVOKE_METHOD", $"error invoke actor method: {detail}");

    public static HttpReply ActorStateGet(string detail) =>
        Json(500, "ERR_ACTOR_STATE_GET", $"error getting actor state: {detail}");

    // predefined.go ErrActorInstanceMissing: 400, errorcodes.ActorInstanceMissing.
    public static HttpReply ActorInstanceMissing() =>
        Json(400, "ERR_ACTOR_INSTANCE_MISSING", "actor instance is missing");

    public static HttpReply ActorStateTransactionSave(string detail) =>
        Json(500, "ERR_ACTOR_STATE_TRANSACTION_SAVE", $"error saving actor transaction state: {detail}");

    public static HttpReply ReminderNotHosted() =>
        Json(403, "ERR_ACTOR_REMINDER_NON_HOSTED", "operations on actor reminders are only possible on hosted actor types");

    public static HttpReply ReminderCreate(string detail) =>
        Json(500, "ERR_ACTOR_REMINDER_CREATE", $"error creating actor reminder: {detail}");

    // 1.17+: GET of a missing reminder is a 404 (pkg/api/universal/actors.go GetActorReminder).
    public static HttpReply ReminderNotFound(string name) =>
        Json(404, "ERR_ACTOR_REMINDER_NOT_FOUND", $"actor reminder not found: {name}");

    public static HttpReply TimerCreate(string detail) =>
        Json(500, "ERR_ACTOR_TIMER_CREATE", $"error creating actor timer: {detail}");

    public static HttpReply BadRequest(string detail) =>
        Json(400, "ERR_BAD_REQUEST", $"invalid request: {detail}");
}

/// <summary>A reply of the sidecar's HTTP API, written by <see cref="SidecarHttpApi"/>.</summary>
internal sealed record HttpReply(int Status, byte[]? Body, string? ContentType)
{
    public List<KeyValuePair<string, string>> Headers { get; } = new();

    public static HttpReply Empty(int status = 204) => new(status, null, null);

    public static HttpReply JsonBody(byte[] body, int status = 200) => new(status, body, "application/json");
}
