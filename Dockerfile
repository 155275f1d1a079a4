# Build: docker build -t ghcr.io/example/handoff-dapr:latest .
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY Directory.Build.props Directory.Packages.props HandoffDapr.sln ./
COPY src/ src/
RUN dotnet publish src/HandoffDapr.Service -c Release -o /app --no-self-contained

# Chiseled runtime: no shell, no package manager, non-root user 1654 ("app").
FROM mcr.microsoft.com/dotnet/aspnet:10.0-noble-chiseled
WORKDIR /app
COPY --from=build /app .
USER 1654
# Workstation GC: the pod has one CPU and 512 MiB (k8s/deployment.yaml), where server GC's per-core heaps gain nothing.
ENV ASPNETCORE_HTTP_PORTS=5080 \
    DOTNET_gcServer=0 \
    Handoff__DataPath=/tmp/handoff.db
EXPOSE 5080
ENTRYPOINT ["dotnet", "HandoffDapr.Service.dll"]
