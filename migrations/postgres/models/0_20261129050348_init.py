from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "accounts_user" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "email" VARCHAR(254) NOT NULL UNIQUE,
    "password_hash" VARCHAR(255) NOT NULL,
    "first_name" VARCHAR(150) NOT NULL,
    "last_name" VARCHAR(150) NOT NULL,
    "user_type" VARCHAR(16) NOT NULL,
    "is_active" BOOL NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "last_login" TIMESTAMPTZ
);
COMMENT ON COLUMN "accounts_user"."user_type" IS 'CLIENT: client\nSTAFF: staff\nADMIN: admin';
CREATE TABLE IF NOT EXISTS "accounts_client_profile" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "company" VARCHAR(200) NOT NULL,
    "phone" VARCHAR(40) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "user_id" INT NOT NULL UNIQUE REFERENCES "accounts_user" ("id") ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS "accounts_refresh_token" (
    "jti" VARCHAR(64) NOT NULL PRIMARY KEY,
    "family" VARCHAR(64) NOT NULL,
    "expires_at" TIMESTAMPTZ NOT NULL,
    "used_at" TIMESTAMPTZ,
    "revoked_at" TIMESTAMPTZ,
    "created_at" TIMESTAMPTZ NOT NULL,
    "user_id" INT NOT NULL REFERENCES "accounts_user" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idx_accounts_re_family_8c89c6" ON "accounts_refresh_token" ("family");
COMMENT ON TABLE "accounts_refresh_token" IS 'One row per refresh token issued. A token is usable once: refreshing marks it used';
CREATE TABLE IF NOT EXISTS "billing_domain_product" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "tld" VARCHAR(63) NOT NULL UNIQUE,
    "registration_price_1yr" DECIMAL(12,2) NOT NULL,
    "registration_price_2yr" DECIMAL(12,2),
    "registration_price_3yr" DECIMAL(12,2),
    "registration_price_5yr" DECIMAL(12,2),
    "registration_price_10yr" DECIMAL(12,2),
    "renewal_price" DECIMAL(12,2) NOT NULL,
    "transfer_price" DECIMAL(12,2) NOT NULL,
    "whois_privacy_price" DECIMAL(12,2) NOT NULL,
    "is_active" BOOL NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS "billing_hosting_product" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(200) NOT NULL,
    "description" TEXT NOT NULL,
    "hosting_type" VARCHAR(16) NOT NULL,
    "monthly_price" DECIMAL(12,2) NOT NULL,
    "quarterly_price" DECIMAL(12,2),
    "semi_annual_price" DECIMAL(12,2),
    "annual_price" DECIMAL(12,2),
    "biennial_price" DECIMAL(12,2),
    "triennial_price" DECIMAL(12,2),
    "setup_fee" DECIMAL(12,2) NOT NULL,
    "is_active" BOOL NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL
);
COMMENT ON COLUMN "billing_hosting_product"."hosting_type" IS 'SHARED: shared\nVPS: vps\nDEDICATED: dedicated\nCLOUD: cloud\nRESELLER: reseller';
CREATE TABLE IF NOT EXISTS "billing_promotion" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(200) NOT NULL,
    "code" VARCHAR(50) NOT NULL UNIQUE,
    "description" TEXT NOT NULL,
    "discount_type" VARCHAR(16) NOT NULL,
    "discount_value" DECIMAL(12,2) NOT NULL,
    "start_date" TIMESTAMPTZ,
    "end_date" TIMESTAMPTZ,
    "is_active" BOOL NOT NULL,
    "usage_limit" INT,
    "usage_count" INT NOT NULL,
    "minimum_order_amount" DECIMAL(12,2) NOT NULL,
    "product_types" JSONB NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL
);
COMMENT ON COLUMN "billing_promotion"."discount_type" IS 'PERCENTAGE: percentage\nFIXED: fixed';
CREATE TABLE IF NOT EXISTS "billing_cart" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "anonymous_token" VARCHAR(64),
    "active_key" VARCHAR(80) UNIQUE,
    "status" VARCHAR(16) NOT NULL,
    "merged_into_id" INT,
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "coupon_id" INT REFERENCES "billing_promotion" ("id") ON DELETE SET NULL,
    "user_id" INT REFERENCES "accounts_user" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idx_billing_car_anonymo_1d9172" ON "billing_cart" ("anonymous_token");
COMMENT ON COLUMN "billing_cart"."status" IS 'ACTIVE: active\nMERGED: merged\nCOMPLETED: completed';
CREATE TABLE IF NOT EXISTS "billing_invoice" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "invoice_number" VARCHAR(40) NOT NULL UNIQUE,
    "status" VARCHAR(16) NOT NULL,
    "issue_date" DATE NOT NULL,
    "due_date" DATE NOT NULL,
    "paid_date" DATE,
    "subtotal" DECIMAL(12,2) NOT NULL,
    "tax_rate" DECIMAL(5,2) NOT NULL,
    "tax_amount" DECIMAL(12,2) NOT NULL,
    "discount_amount" DECIMAL(12,2) NOT NULL,
    "total" DECIMAL(12,2) NOT NULL,
    "billing_info" JSONB NOT NULL,
    "payment_method" VARCHAR(20) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "cart_id" INT REFERENCES "billing_cart" ("id") ON DELETE SET NULL,
    "promotion_id" INT REFERENCES "billing_promotion" ("id") ON DELETE SET NULL,
    "user_id" INT NOT NULL REFERENCES "accounts_user" ("id") ON DELETE RESTRICT
);
COMMENT ON COLUMN "billing_invoice"."status" IS 'DRAFT: draft\nSENT: sent\nPAID: paid\nOVERDUE: overdue\nCANCELLED: cancelled';
CREATE TABLE IF NOT EXISTS "billing_invoice_item" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "description" VARCHAR(255) NOT NULL,
    "service_category" VARCHAR(50) NOT NULL,
    "billing_cycle" VARCHAR(16) NOT NULL,
    "quantity" INT NOT NULL,
    "unit_price" DECIMAL(12,2) NOT NULL,
    "total" DECIMAL(12,2) NOT NULL,
    "service_metadata" JSONB NOT NULL,
    "invoice_id" INT NOT NULL REFERENCES "billing_invoice" ("id") ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS "billing_payment" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "amount" DECIMAL(12,2) NOT NULL,
    "method" VARCHAR(20) NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "reference" VARCHAR(100) NOT NULL,
    "paid_at" TIMESTAMPTZ,
    "created_at" TIMESTAMPTZ NOT NULL,
    "invoice_id" INT NOT NULL REFERENCES "billing_invoice" ("id") ON DELETE RESTRICT,
    "recorded_by_id" INT REFERENCES "accounts_user" ("id") ON DELETE SET NULL
);
COMMENT ON COLUMN "billing_payment"."status" IS 'PENDING: pending\nCOMPLETED: completed\nFAILED: failed';
CREATE TABLE IF NOT EXISTS "billing_service" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(200) NOT NULL,
    "category" VARCHAR(50) NOT NULL,
    "description" TEXT NOT NULL,
    "price" DECIMAL(12,2) NOT NULL,
    "billing_cycle" VARCHAR(16) NOT NULL,
    "is_active" BOOL NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE "billing_service" IS 'Anything sold that is neither hosting nor a domain (SSL, e-mail, design work).';
CREATE TABLE IF NOT EXISTS "billing_cart_item" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "service_name" VARCHAR(255) NOT NULL,
    "service_category" VARCHAR(50) NOT NULL,
    "product_type" VARCHAR(50) NOT NULL,
    "service_metadata" JSONB NOT NULL,
    "quantity" INT NOT NULL,
    "billing_cycle" VARCHAR(16) NOT NULL,
    "unit_price" DECIMAL(12,2) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "cart_id" INT NOT NULL REFERENCES "billing_cart" ("id") ON DELETE CASCADE,
    "domain_product_id" INT REFERENCES "billing_domain_product" ("id") ON DELETE RESTRICT,
    "hosting_product_id" INT REFERENCES "billing_hosting_product" ("id") ON DELETE RESTRICT,
    "service_id" INT REFERENCES "billing_service" ("id") ON DELETE RESTRICT
);
CREATE TABLE IF NOT EXISTS "aerich" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSONB NOT NULL
);"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        """


MODELS_STATE = (
    "eJztXWlv4zgS/SuCP3UDmSD3NLKLBRzH6faOYweJu7cxm4XASLTNjUSqdSRtzPZ/X1KHrY"
    "M6I9uSwi9BLLEo6fGqelUs/tXTiQo163CgIYjtO5PMkQZ7l9JfPQx09g+/wIHUA4axuc0u"
    "2ODJFe0BRSEOti1ZcWVkIyT0ZNkmUGxabA40C9JLKrQUExk2IphexY6msYtEoQURXmwuOR"
    "j9cKBskwW0l9CkN/79H3oZYRX+hFbw03iW5whqauQTkMqe7V6X7ZXhXhth+8YtyJ72JCtE"
    "c3S8KWys7CXB69II2+zqAmJoAhuy6m3TYa/P3s7/8OCLvDfdFPFeMSSjwjlwNDv0uU/y5l"
    "pPlifTmfwwnMlyrwRACsEMXPqqlvv1C/YKv50cn/1+9un04uwTLeK+5vrK77+8R2+A8QRd"
    "eCaz3i/3PrCBV8LFeAOqQnQD4FUS2cESmHxoQyIxfOmLx/EN0MwCOLiwQXjTq9Zw9rYFsA"
    "5+yhrEC3vJUD06yoDzW/9+8KV//4GW+sgeSegg8AbLxL914t1jmG8wNihGsAzCa4HO4XtW"
    "BN6zdHTPEuAqJmRQyMBOInxN79hIhyn9OCIZg1r1RQ+Df7YF/DbnDvqB6hRrK3/OyoB+Nr"
    "odPsz6t3fscbpl/dBc/PqzIbtz4l5dxa5+uIg107oS6V+j2ReJ/ZT+nE6GLrzEshem+8RN"
    "udmfPfZOwLGJjMmrDNTQ9BpcDVCLtLpjQVMutSCEJPJXhSKN2/plgS208+fQqsAuPAHl+R"
    "WYqpy4Q04IdwVhwCbbYYrhjNA/bmOM6LsDrPCmNF8v+epX0qpG+BX0seDq5vkmeF1rMOGu"
    "R7+cfi+0vQWg/zDoXw97vyLAR3Fmt/QTPX4FYLBwv5e9GXsPH8d7OKeDbDkjzxDz9L/I/W"
    "Lqn+mJUJUtkMnT/ljjSyZ5lQxoSr645IpLyLIcqB5K/fVvybHYIyVC+8dlUJqiLunAfLYk"
    "ZNMC0BvOoQbZwiMeMcCqJ82uWZLlKAq0LGJKCEtUWZUsiiX9ZB1pq79JBq2EqsWsGuDKS4"
    "S9yQt9puo/2ftlPWIm/LokWiAtfaDPfAX0ETa9iD1JQwMrqH487L1NS/6vjcqoGn7xehSN"
    "/U6JEUXj4qyAonFxlqposFvZmrPXlGWw3khsS69rP94bfOFPA9ExVkGxi0p2ULFriSIXYJ"
    "KnyVVR3kNiNTSwP25E+9bfvv6SWKGJo5KilZvcysIKT18nhRW+RSt83427DTs8z7a+ISZE"
    "C/wHXG3Zum7GBFmzfZ1DbNRni7uoc2zwoDUK2N5B+wuHS6tG9EGG2Qh1gLQyVuNaoHM2+s"
    "l5EaORlkp3tpwnzEYDWNYroWN3CaxlKadLXHB3zpcdIn5eCPHzDMTP44jPkWnZsvurBNxR"
    "qc45uo7Pi3i6aKlUpN17UaQ1UAHoiJDAuQjOrkLhYsTFeYgdPaF5JdXcoIIdYu6FapREvj"
    "cYj4aT2aXkST9iahXc3FxK9Nvm80fcv74dTS4loOoIx2n4Qi10UaSB4lZMqH0u4s2DLJnq"
    "QuiF0zxXhGgQ4BQVJSwXa5UnKritZglW2N1yCFfT6ThiR16NZjGMv95eDSn2LvS0EPLU5k"
    "CHEdb9+7bu3YVDIwtv2Jdp9aikYO6axtyV8PyHidyQH9jiTL2+/M0f91ADLqTJxk9xQ7ds"
    "0KcRE9FJE5j2G2Ea0CpaOzqy0UH4hSAFvhGgkVdLV7uQCRVqkNLl0wArHeK3dqc7r5YO9a"
    "hS9F1oaCYimvmgBkFMBUZqPK66QwCXoDzdCYsXdu5PZOmU5xPSNPqGshKUFIznzlTYLTOe"
    "ABO80oljbULIinIXHNFK1nT+cOtS5Ixn5MrPsFR0UlSqFpgbxDV/KkITfUpniT4lSCLLBr"
    "bDWZGLMUQb6R3SQxv2oww91B/MRt+Gl5In/Yhvh/efh9eXkg7NBQubHExv78bDGbvEtoYw"
    "71siXnM/RJH3hjJ9HCnnpk4KVvJWN2yVr2eiF7TQ+6aFHEOt2OpRSdHqTWl1Dk+UZDOIY9"
    "DWKjWLRmTEBJqcQHcfP9VBQBsTPtUwbGuLnkpOAzVgemcSnQScSjeBjUx/EWjpG0iTr+Nx"
    "VmRaiJSwoV4DkTyi1bRwTW0km9ySHlmOH63A9bl9KoXvC/pbMc5PRkFxQfy1afU9yCD+6M"
    "LyQsdT6YiluJwIxCsWiBfgplBUFsQsxf7xZDuIe6FosYxgsWSsmGES1VHsjHCxlHDTmJwA"
    "uwDYQS/VoQ3YtJME/J8P00l2Dw/LxjkIpNjS/yQNWVvbi9L7+9zBCsNVenKQZiNsHbLH/q"
    "MkK1tHrArDKkI/BNB/uO1/j7fKYDy9ivMKrIKrWBP9cAC2kc2ZfFLX07DI7nYFHTd6Vd0A"
    "utaSVgrPV50+wyQEOzjF1O8zoN/JIgN8OyBGb0IF6UBLoWYigvGZxZM89GtoIe4ZOF8PB6"
    "Pb/vjD8cnBSSyWNJzSSTgPuk0jF3EeeKZeKRJ5IyF2jHKWB5XotG45UCdLYcuVFbxyEuQl"
    "HQVsKa2EMl9YwJyEOVDRS8EbFRKw5npFghC7NzL4BYOTmzb/FmbvN+tOvlskNsRrQPeLV+"
    "PdpsJ29eGiMPMnxwji91TpuB8NZr2Mda8GxK/dCjsPOHfNL4C3P83WAPTDpqZuQhxdkVKw"
    "3U9Oimgn53huEqMg332THInCh9MqXeEgw4djaxxU0zknv3jnUlVcnBYJ0j5ND9I+jfMfJl"
    "wg9jz2Xh5tJB+vONEqmZxTeiWCf8rhnzjQndSB/0lN+Ddz7dsm/Kd1wH8q4K8I/3kd8J8L"
    "+CvCf3xUy+x/JBqgWANg+Aq0So6ehKxYa3PQplVjaw7NSnAnhQXeOXi/LgmyGF4vQFlVAj"
    "2lhv0g3zs6PDrqtQR7kZxIJCdqyrzSYUey2IXWtVZP24VWKVnROqR8dxsnmqkx73ZPQMxr"
    "xeGXk36tfIKZ410TDHNnGOayuwO6vCtgG6dPht8sAfMM/kyLDYqKdSBxbNY6OPw+iyyBiU"
    "jo9TI4nk4+B8Xj4dH8oKH0nQH5aULidTS50/ceKGAsC4hFP40lBvl293ApvRjWI74eXo8G"
    "fTdFiApVxDaZsMQh4+lXljREIw79dT98GI7Hw3t2QpsFNc3bc7v/gGCdYHupVTOjE7KCus"
    "gxn384VOOCZkW8OdKCCc0G3II6kgHGTkU2lCsvQM8G/Q14C6jLQf2EIMaoIthJYQF3Ntz0"
    "aW/AmyMtAM+bv23HkOew/LwdkhO8vuD1Ba/fGqW7pQyv4PXfY6sLXr/9vH6QGYlD6IeSJu"
    "Uz+ShUWDD4O5s4tszg+60qY0d/4iXcS+fyk5Kdixw/K0Lpn6Uz+hyNv32Jp60Kp5Jd3/dv"
    "ZpeSaoI5O5PMPaHMcs8nu+uPri8lAyD1EU+/De+vvw4vJfICTdWBj3jQnwwYkcyYZYaApj"
    "UlHTWyLDptMQ2Er9ukGRBhqSy9poU6TZaVRvWSuCurAnyqAC84GBWppdGLCL0RvmYqUgXR"
    "s5wnm9iAc3JvNssSEhO+nzzukE6/Jr+DZpKGIbH3SWSdlwQZ6Ox48QowbwTfJ9ClurOKLP"
    "cY92pwc6QF5vm9u8IcLSbo4r60wIyfkyTI6akX43Ii7WKEl6sj7aJ/QiDLbrkkpbZsJyWb"
    "HGRUObKuUGBdRlydyF/XdaJauCfeY6unuSf2m7WwYbZy3YnejOD0j3KoxsUEtE04U6hxE1"
    "GXDhVqGrhFc2ClnSrETy6225SEjTqmtCigafkIN2cJcSfYGlB9B0c1xReW/Z7W5LvUu3xg"
    "064PtG8NSDuI4kg7tCnW7QpHc4ijm7oX0pG5aTCdS9rbpsHdEUni4Ka94F7/WULiXJWdBr"
    "+05lygxs/a4qwa4VXsErriULfGexfXmn4pXTsiJCbwfGoxFB7/Rs6m+FHGTYO4KGUT7V38"
    "IzrS+ZptmtkBK8ExsUOERb55bYQKC8u6TUP8IMOyrhQMtu8YsBZpE+UDYETgS6nAlxZuP1"
    "GIbrDFIWj7wntQ7oaT69Hk86VkQKxS0B/xYHp7Nx66mYzWtT7im/7I3XAyB6gxu01MOIcm"
    "xDx1In0sRIQ6kPMrBnKh/GrHGfnVjpP51dwtEuXjgUJiNQQDNdPv1sLYn2TIlwj0Sx9d7Q"
    "z5KhLoJyze7VCWJlSIqdJB8bQqh21SUER/CUJhN4QCP2gp1CNrALhgPFjD+m9RcJOjt3SI"
    "zVYpm3WIE4+0Ccc/FaBtIsUFcdOmqfQgg7gReaq3m6daoUOqDL5B+c5lDKk/1EGkAN9TCv"
    "D1Jl4XNG7nzqfMEpU0eUbp3Q3vB8PJrP95yFgzU4HYpmvuI74ZfXcZMvSzKQTZGtcXoDll"
    "IyiSwoKZz2Hmafc27YwMJOlESlRS0GVNpssgzsoyk97GYTnRwk1uYZEJd8eZcB2LrqCyhn"
    "TEoaAztvVFpARblgaswnfI5wCrpHjkt0jzHrUEVh1hpDu6zBgfs1r2m7QqRAqcXDXLPyXN"
    "ryoBe3osZUKwGYGU7HmdCaQUzsT0WahbzsSEV6bI5lG2ybeGzNbtW9kLbRr1PTT17K7tEE"
    "bb9Iw8eAH2PY5fJLh1UMQrYoUK5/lEen1MW45KSRbRVMleAltCloQhYo4QyT8TT8LElICk"
    "Ep1iIX14eBgfSPA3+oNCR+tDCyy9EvP542GcbdpC9cJXI3w1jZknduGrqbBRVWxQFV6bdn"
    "htquyoFJspi9qnbdx33SOYru6+XdXG3deCsxWnlzVlQhGGvjjHak/WbB/SZXrZ4xiz/p2D"
    "LFsWbMqIsL6dzRZbNhVfoGmVzHIUEumgIbOVDEdsUJVA2C/eQXS3sgWNPtGGPB9burMnJL"
    "J7N89+rJXaHDolVvz6F7Nf/wci4RdD"
)
