namespace HandoffDapr.Service.Security;

/// <summary>
/// Headers every response carries: no MIME sniffing anywhere; the status page's files under a policy that allows only
/// its own script and style and no framing (its token form must not be overlaid by another site); every other answer
/// (run data, problems) never stored by a cache, the browser's disk cache included. The page's files may be kept but are
/// asked for again (a 304 by their ETag) before each use: without a directive a browser reuses them unasked for a tenth
/// of their age, so after an upgrade the new page could run the old script for days.
/// </summary>
public static class SecurityHeaders
{
    public const string StatusPagePath = "/ui";

    public const string StatusPagePolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

    public static IApplicationBuilder UseSecurityHeaders(this IApplicationBuilder app) => app.Use((context, next) =>
    {
        // As the response starts, not as the request comes in: the exception handler clears the headers before it answers.
        context.Response.OnStarting(static state =>
        {
            var context = (HttpContext)state;
            var headers = context.Response.Headers;
            headers.XContentTypeOptions = "nosniff";
            if (context.Request.Path.StartsWithSegments(StatusPagePath))
            {
                headers.ContentSecurityPolicy = StatusPagePolicy;
                headers.XFrameOptions = "DENY";
                if (string.IsNullOrEmpty(headers.CacheControl))
                {
                    headers.CacheControl = "no-cache";
                }
            }
            else if (!headers.CacheControl.ToString().Contains("no-store", StringComparison.OrdinalIgnoreCase))
            {
                headers.CacheControl = "no-store";
            }

            return Task.CompletedTask;
        }, context);
        return next(context);
    });
}
