using System.Net;
using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using HandoffDapr.Service.Configuration;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Security;

/// <summary>
/// Who may call the API (everything but health and provider webhooks):
/// in Dapr mode the sidecar, proven by <c>dapr-api-token</c> when <c>APP_API_TOKEN</c> is set;
/// in embedded mode a bearer token from <c>Handoff:ApiToken</c>, or, with none configured, loopback callers only.
/// </summary>
public static partial class CallerAuthorization
{
    public const string Policy = "HandoffCaller";
    public const string TokenScheme = "HandoffToken";

    public static CallerCheck AddCallerAuthorization(this IServiceCollection services, IConfiguration configuration, HostingMode mode)
    {
        var appApiToken = configuration["APP_API_TOKEN"];
        var apiToken = configuration[$"{HandoffOptions.SectionName}:ApiToken"];
        // AddAuthentication would also add data protection, whose key ring is loaded at every start (a key file in the
        // home folder, three warnings under a read-only root filesystem) though nothing here protects data.
        services.AddAuthenticationCore().AddWebEncoders();
        var authentication = new AuthenticationBuilder(services);
        CallerCheck check;
        if (mode == HostingMode.Dapr && !string.IsNullOrEmpty(appApiToken))
        {
            // Our handler, not Dapr.AspNetCore's AddDapr: that one compares the token with string.Equals.
            authentication.AddScheme<TokenAuthenticationOptions, TokenAuthenticationHandler>(TokenScheme, options =>
            {
                options.Token = appApiToken;
                options.Header = TokenAuthenticationOptions.DaprApiTokenHeader;
            });
            services.AddAuthorization(options => options.AddPolicy(Policy, policy => policy.AddAuthenticationSchemes(TokenScheme).RequireAuthenticatedUser()));
            check = CallerCheck.DaprApiToken;
        }
        else if (mode == HostingMode.Embedded && !string.IsNullOrEmpty(apiToken))
        {
            authentication.AddScheme<TokenAuthenticationOptions, TokenAuthenticationHandler>(TokenScheme, options => options.Token = apiToken);
            services.AddAuthorization(options => options.AddPolicy(Policy, policy => policy.AddAuthenticationSchemes(TokenScheme).RequireAuthenticatedUser()));
            check = CallerCheck.BearerToken;
        }
        else if (mode == HostingMode.Embedded)
        {
            services.AddAuthorization(options => options.AddPolicy(Policy, policy => policy.RequireAssertion(context => IsLocal(context.Resource as HttpContext))));
            check = CallerCheck.LoopbackOnly;
        }
        else
        {
            services.AddAuthorization(options => options.AddPolicy(Policy, policy => policy.RequireAssertion(_ => true)));
            check = CallerCheck.None;
        }

        // In Dapr mode callers come through daprd, which proves itself by APP_API_TOKEN: a Handoff:ApiToken set there
        // (copied from an embedded set-up) is not used, and the operator must not believe the API is guarded by it.
        services.AddSingleton(new CallerCheckInUse(check) { ApiTokenIgnored = mode == HostingMode.Dapr && !string.IsNullOrEmpty(apiToken) });
        services.AddSingleton<Microsoft.AspNetCore.Authorization.IAuthorizationMiddlewareResultHandler, ProblemAuthorizationResultHandler>();
        return check;
    }

    /// <summary>Says at start how callers are checked, and warns when the check is weak.</summary>
    public static void LogCallerCheck(this WebApplication app)
    {
        var check = app.Services.GetRequiredService<CallerCheckInUse>().Check;
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(CallerAuthorization).FullName!);
        if (app.Services.GetRequiredService<CallerCheckInUse>().ApiTokenIgnored)
        {
            LogApiTokenIgnored(logger);
        }

        switch (check)
        {
            case CallerCheck.LoopbackOnly:
                LogLoopbackOnly(logger);
                break;
            case CallerCheck.None:
                LogNoCheck(logger);
                break;
            default:
                LogChecked(logger, check);
                break;
        }
    }

    /// <summary>
    /// Loopback addresses only. A request with no remote address did not come over TCP (an in-process test server,
    /// a Unix socket): it is local too. A browser on this machine is local as well, so it must also have been sent
    /// to a loopback name, and not on behalf of another site: otherwise any page the operator opens could trigger
    /// handoffs here (a POST without Content-Type needs no CORS preflight), or read runs through DNS rebinding.
    /// </summary>
    internal static bool IsLocal(HttpContext? context) => WhyNotLocal(context) is null;

    /// <summary>Why <see cref="IsLocal"/> refuses the caller, for the log; null when it does not.</summary>
    internal static string? WhyNotLocal(HttpContext? context) =>
        context?.Connection.RemoteIpAddress is { } address && !IPAddress.IsLoopback(address) ? "not a loopback caller"
        : context is null ? null
        : !IsLoopbackHost(context.Request.Host.Host) ? "sent to a host name that is not loopback"
        : IsCrossSiteBrowserRequest(context.Request) ? "a browser request on behalf of another site"
        : null;

    /// <summary>A page elsewhere resolving its own name to 127.0.0.1 (DNS rebinding) sends its own Host.</summary>
    private static bool IsLoopbackHost(string host) =>
        // "localhost." (the fully qualified form) is loopback too.
        string.IsNullOrEmpty(host) || host.TrimEnd('.').Equals("localhost", StringComparison.OrdinalIgnoreCase)
        || (IPAddress.TryParse(host, out var ip) && IPAddress.IsLoopback(ip));

    /// <summary>A browser on another site (no preflight for a POST without Content-Type) says so in Sec-Fetch-Site or Origin.</summary>
    private static bool IsCrossSiteBrowserRequest(HttpRequest request) =>
        request.Headers["Sec-Fetch-Site"].ToString() is "cross-site" or "same-site"
        || (request.Headers.Origin.ToString() is { Length: > 0 } origin
            && (!Uri.TryCreate(origin, UriKind.Absolute, out var uri) || !IsLoopbackHost(uri.Host)));

    [LoggerMessage(EventId = 6001, EventName = "LoopbackOnly", Level = LogLevel.Warning,
        Message = "No Handoff:ApiToken is configured: the API accepts loopback callers only. Set Handoff:ApiToken to accept others with a bearer token.")]
    private static partial void LogLoopbackOnly(ILogger logger);

    [LoggerMessage(EventId = 6002, EventName = "NoCallerCheck", Level = LogLevel.Warning,
        Message = "APP_API_TOKEN is not set: any caller that reaches the app port is accepted. Set dapr.io/app-token-secret (Kubernetes) or APP_API_TOKEN.")]
    private static partial void LogNoCheck(ILogger logger);

    [LoggerMessage(EventId = 6004, EventName = "ApiTokenIgnored", Level = LogLevel.Warning,
        Message = "Handoff:ApiToken is set but not used in Dapr mode: callers come through daprd, checked by APP_API_TOKEN. Remove it, or set APP_API_TOKEN (dapr.io/app-token-secret).")]
    private static partial void LogApiTokenIgnored(ILogger logger);

    /// <summary>
    /// The caller's address, which is no secret, so an operator can tell a misconfigured client from a stranger; never
    /// the token sent. At most one line a minute per reason (<see cref="RefusalLog"/>): anyone can send these.
    /// </summary>
    [LoggerMessage(EventId = 6005, EventName = "CallerRefused", Level = LogLevel.Warning,
        Message = "API call refused ({StatusCode}): {Reason}, from {RemoteAddress}; {Unlogged} more refused for this reason since the last such line were not logged (one line a minute)")]
    internal static partial void LogCallerRefused(ILogger logger, int statusCode, string reason, string remoteAddress, long unlogged);

    [LoggerMessage(EventId = 6003, EventName = "CallerCheck", Level = LogLevel.Information, Message = "API callers are checked by {Check}")]
    private static partial void LogChecked(ILogger logger, CallerCheck check);
}

public sealed record CallerCheckInUse(CallerCheck Check)
{
    /// <summary>Dapr mode with <c>Handoff:ApiToken</c> set: it guards nothing there, and start-up says so.</summary>
    public bool ApiTokenIgnored { get; init; }

    /// <summary>
    /// The <c>WWW-Authenticate</c> challenge a 401 carries (RFC 9110 §11.6.1: a 401 must name what would be accepted).
    /// Dapr's <c>dapr-api-token</c> header is no registered scheme: the challenge names the header to send.
    /// </summary>
    public string? Challenge => Check switch
    {
        CallerCheck.BearerToken => "Bearer realm=\"handoff-dapr\"",
        CallerCheck.DaprApiToken => "dapr-api-token",
        _ => null,
    };

    /// <summary>
    /// Why a caller without credentials was refused (<c>401</c>), for the log: a token sent, or none. daprd's header
    /// given twice is refused unread (<see cref="TokenAuthenticationHandler"/>): its tokens may be right, not "wrong".
    /// </summary>
    public string WhyUnauthenticated(HttpRequest request) => Check switch
    {
        CallerCheck.DaprApiToken when request.Headers[TokenAuthenticationOptions.DaprApiTokenHeader].Count > 1
            => "dapr-api-token sent more than once",
        CallerCheck.DaprApiToken when request.Headers.ContainsKey(TokenAuthenticationOptions.DaprApiTokenHeader) => "wrong dapr-api-token",
        CallerCheck.DaprApiToken => "no dapr-api-token",
        _ when request.Headers.Authorization.ToString().StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) => "wrong bearer token",
        _ => "no bearer token",
    };
}

public enum CallerCheck
{
    DaprApiToken,
    BearerToken,
    LoopbackOnly,
    None,
}

public sealed class TokenAuthenticationOptions : AuthenticationSchemeOptions
{
    public const string DaprApiTokenHeader = "dapr-api-token";

    public string Token { get; set; } = string.Empty;

    /// <summary>Null: <c>Authorization: Bearer</c>. Otherwise the header that carries the token as is (daprd's <c>dapr-api-token</c>).</summary>
    public string? Header { get; set; }
}

/// <summary>
/// <c>Authorization: Bearer {Handoff:ApiToken}</c>, or daprd's <c>dapr-api-token: {APP_API_TOKEN}</c>. The SHA-256
/// digests are compared in constant time, so neither the content nor the length of the token leaks through timing.
/// </summary>
public sealed class TokenAuthenticationHandler(IOptionsMonitor<TokenAuthenticationOptions> options, ILoggerFactory logger, UrlEncoder encoder)
    : AuthenticationHandler<TokenAuthenticationOptions>(options, logger, encoder)
{
    protected override Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        string token;
        if (Options.Header is { } name)
        {
            if (!Request.Headers.TryGetValue(name, out var values) || values.Count != 1)
            {
                return Task.FromResult(AuthenticateResult.NoResult());
            }

            token = values.ToString();
        }
        else
        {
            var header = Request.Headers.Authorization.ToString();
            if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            {
                return Task.FromResult(AuthenticateResult.NoResult());
            }

            token = header["Bearer ".Length..].Trim();
        }

        if (!CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(token)), SHA256.HashData(Encoding.UTF8.GetBytes(Options.Token))))
        {
            return Task.FromResult(AuthenticateResult.Fail("Invalid token."));
        }

        var identity = new ClaimsIdentity([new Claim(ClaimTypes.Name, "api-client")], Scheme.Name);
        return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), Scheme.Name)));
    }
}

/// <summary>
/// Answers a refused caller with a problem (401 without valid credentials, 403 for a caller that may not come in),
/// whatever scheme is or is not configured.
/// </summary>
public sealed class ProblemAuthorizationResultHandler(RefusalLog refusals, ILoggerFactory loggers)
    : Microsoft.AspNetCore.Authorization.IAuthorizationMiddlewareResultHandler
{
    private readonly ILogger logger = loggers.CreateLogger(typeof(CallerAuthorization).FullName!);

    private readonly Microsoft.AspNetCore.Authorization.Policy.AuthorizationMiddlewareResultHandler fallback = new();

    public Task HandleAsync(
        RequestDelegate next,
        HttpContext context,
        Microsoft.AspNetCore.Authorization.AuthorizationPolicy policy,
        Microsoft.AspNetCore.Authorization.Policy.PolicyAuthorizationResult authorizeResult)
    {
        if (authorizeResult.Succeeded)
        {
            return fallback.HandleAsync(next, context, policy, authorizeResult);
        }

        var authenticated = context.User.Identity?.IsAuthenticated == true;
        var needsCredentials = policy.AuthenticationSchemes.Count > 0 && !authenticated;
        var check = context.RequestServices.GetRequiredService<CallerCheckInUse>();
        if (!needsCredentials)
        {
            LogRefused(context, StatusCodes.Status403Forbidden, CallerAuthorization.WhyNotLocal(context) ?? "not allowed");
            return Api.Problems.Forbidden().ExecuteAsync(context);
        }

        LogRefused(context, StatusCodes.Status401Unauthorized, check.WhyUnauthenticated(context.Request));
        if (check.Challenge is { } challenge)
        {
            context.Response.Headers.WWWAuthenticate = challenge;
        }

        return Api.Problems.Unauthorized().ExecuteAsync(context);
    }

    private void LogRefused(HttpContext context, int statusCode, string reason)
    {
        if (refusals.ShouldLog(logger, null, reason) is { } unlogged)
        {
            CallerAuthorization.LogCallerRefused(logger, statusCode, reason, context.Connection.RemoteIpAddress?.ToString() ?? "no address (in-process, or a Unix socket)", unlogged);
        }
    }
}
