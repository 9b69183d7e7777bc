from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "chat_conversation" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "session_id" CHAR(36) NOT NULL UNIQUE,
    "visitor_name" VARCHAR(100) NOT NULL,
    "department" VARCHAR(32) NOT NULL,
    "status" VARCHAR(16) NOT NULL /* ACTIVE: active\nCLOSED: closed */,
    "auto_reply_sent" INT NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "last_active_at" TIMESTAMP NOT NULL,
    "closed_at" TIMESTAMP,
    "user_id" INT REFERENCES "accounts_user" ("id") ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS "idx_chat_conver_departm_1cabeb" ON "chat_conversation" ("department");
        CREATE TABLE IF NOT EXISTS "chat_message" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "sender_type" VARCHAR(16) NOT NULL /* USER: user\nAGENT: agent\nSYSTEM: system */,
    "sender_name" VARCHAR(150) NOT NULL,
    "text" TEXT NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "conversation_id" INT NOT NULL REFERENCES "chat_conversation" ("id") ON DELETE CASCADE
);"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP TABLE IF EXISTS "chat_message";
        DROP TABLE IF EXISTS "chat_conversation";"""


MODELS_STATE = (
    "eJztXWlv4zgS/SuCP3UDmSD3NDyLBdyO0uOdXIid3t7ZLARGomNuJEotSkkbs/3fl9Rh66"
    "DOyLak8EsQSyxKeryqXhWLfw0MU4M62R/rCGLn1jbnSIeDofTXAAOD/cMvsCcNgGWtb7ML"
    "Dnj0RAdAVU0XO0RRPRnFigg9EscGqkOLzYFOIL2kQaLayHKQielV7Oo6u2iqtCDCT+tLLk"
    "bfXag45hN0FtCmN/79H3oZYQ3+gCT8aT0rcwR1LfYJSGPP9q4rztLyrk2wc+EVZE97VFRT"
    "dw28LmwtnYWJV6URdtjVJ4ihDRzIqndsl70+e7vgw8Mv8t90XcR/xYiMBufA1Z3I5z4q62"
    "sDRbm+mSlTeaYogwoAqSZm4NJXJd7XP7FX+OXo8OTXk0/HZyefaBHvNVdXfv3pP3oNjC/o"
    "wXM9G/z07gMH+CU8jNegqqZhAbxMIzteAJsPbUQkgS998SS+IZp5AIcX1give9UKzsGmAD"
    "bAD0WH+MlZMFQPDnLg/Dq6G/8+uvtAS31kjzTpIPAHy3Vw68i/xzBfY2xRjGAVhFcCvcP3"
    "pAy8J9nonqTAVW3IoFCAk0b4nN5xkAEz+nFMMgG1Fojuh/9sCvhNzh30A7UbrC+DOSsH+t"
    "nkSp7ORle37HEGId91D7/RTGZ3jryry8TVD2eJZlpVIv1zMvtdYj+lP2+uZQ9ekzhPtvfE"
    "dbnZnwP2TsB1TAWbrwrQItNreDVELdbqLoG2UmlBiEgUrwplGrfzywJbaOfPkVWBXXgE6v"
    "MrsDUldcc8MrkrCAM23Q43GM5M+sdrjAl9d4BV3pQW6CX3QSWdaoSfYR8Lr66fb4PXlQYT"
    "7Xr0y+n3QsdfAEbT8ehcHvyMAR/Hmd0yjozkFYDBk/e97M3YewQ43sE5HWSLmfkMMU//i9"
    "0vp/7ZvghV2UKZIu2PNb5km6+SBW0pEJc8cQkR4kJtXxqtfksuYY+UTNo/hmFpirpkAPuZ"
    "SMihBaA/nCMNsoFHPGCANV+aXSMScVUVEmLaEsISVVYlQrGkn2wgffmbZNFKqFrMqgGevG"
    "SyN3mhz9SCJ/u/yANmwq8LUw+lpQ/0ma+APsKhF7EvaelgCbWP+4O3acn/dVAVVSMo3oyi"
    "sdspMaZonJ2UUDTOTjIVDXYrX3P2m7IK1muJTel13cd7jS/8YSE6xmoodnHJHip2HVHkQk"
    "yKNLk6yntErIEGDsaNaN/m2zdYEms0cVxStHKbW1lY4dnrpLDCN2iF77pxN2GHF9nWF6YN"
    "0RP+Ay43bF23Y4Js2L4uIDaas8U91Dk2eNgaJWzvsP2Fw6VTI3ovx2yEBkB6FatxJdA7G/"
    "3otIzRSEtlO1tOU2ajBQh5NenYXQCyqOR0SQpuz/myRcRPSyF+moP4aRLxObKJo3i/KsAd"
    "l+qdo+vwtIyni5bKRNq7F0daBzWAjgkJnMvg7CkUHkZcnGXsGinNK63mhhVsEXM/VKMi8o"
    "Px5US+ng0lX/oBU6vg4mIo0W+bzx/w6Pxqcj2UgGYgnKThS7XQWZkGSloxkfY5SzYPIgrV"
    "hdALp3k+m6YOAc5QUaJyiVZ5pIKbapZwhd0uh/D55uYyZkd+nswSGN9ffZYp9h70tBDy1e"
    "ZQhxHW/fu27r2FQzef/GFfpdXjkoK5axtzV8HzHyVyI35gwpl6A/mLP+6gDjxI042f4Ybu"
    "2KDPIibikyawnTfCNKZVdHZ05KOD8IuJVPhGgCZ+LX3tQjZUqUFKl08LLA2I39qdbv1aet"
    "qj6N0XaBMPg7eOu0hVPUKrEtkZATYV/81HNgz5KoFvMgq9RwBXIIi96Z0XpB9M+9kE8SPS"
    "dfqGihqWFPzw1hT+DfPDAJt4aZguWQfclWV6OKK1uIfi4danOCOfElCeYaVYrrhUIzC3iJ"
    "n/VIZU+5TNqX1KUWrEAY7LWZbL8Wlr6S2SaWuuqAqZNhrPJl/loeRLP+Ar+e6LfD6UDGg/"
    "sSDT8c3V7aU8Y5fYRhrmq0xFt+6GVvPfUKGPM6s59dOCtXz7LVvlm5noBYn2vkk019Jqtn"
    "pcUrR6W1qdw6pxbFHXoq1VaRaNyYgJND2Bbj/arIeAtibYrGXYNhZrlp4GGsD01jYNs19s"
    "VBLY2PQXg5a+gXR9f3mZF8cXISUcaDRAu09oNR1cU1vJvXekR1bjR2twfV6fyuD7wv5Wjv"
    "NTUFhcEH9dWn33cog/urC80PFUOb4rKSfCFsuFLYa4qRSVJ9OuxP7xZHuIe6nYupzQunRk"
    "nWWbmqs6OcF1GcG5CTkBdgmww15qQAewaScN+D+mN9f5PTwqm+QgkOpI/5N0RDa2c2fwt7"
    "mLVYar9Ogi3UGY7LPH/r0iK9tEZA/DKkY/hNB/uBp9S7bK+PLmc5JXYBV8TjTRdxdgBzmc"
    "ySdzPY2KbG8P1WGrV9U1oCstaanyfNXZM0xKsIdTTPM+A/qdLDIgsAMS9CZUkQH0DGomJp"
    "icWXzJ/aCGDuKeg/O5PJ5cjS4/HB7tHSUib6MJsITzoN80chnngW/qVSKR1xJify1nedBM"
    "g9athOpkJWy5soJXToO8oKOALaW1UOYLC5jTMIcqeiV440IC1kKvSBhi90YGv2Qod9vm39"
    "Ls/XrdKXaLJIZ4A+j+7td4u66wW324LMz8yTGG+B1VOu4m49kgZ91rAPFzr8LeA85d80vg"
    "HUyzDQA9XdfUT4jjK1IGtrvJ4BHv5BzPTWoUFLtv0iNR+HA6pSvs5fhwHJ2DajbnFBTvXW"
    "KPs+MyQdrH2UHax0n+w4ZPiD2PvZdPGymHS060Si7nlF2J4J8K+CcOdEdN4H/UEP7tXPs2"
    "Cf9xE/AfC/hrwn/aBPynAv6a8B8eNDL7H4gGKNcAGL4CvZajJyUr1toCtGnVmMyhXQvutL"
    "DAuwDv14WJCMPrBajLWqBn1LAb5AcH+wcHg45gL1I5iVRObZlXeuxIFrvQ+tbqWbvQaqV2"
    "WoWUb2/jRDs15u3uCUh4rTj8ctqvVUwwc7xrgmHuDcNcdXdAn3cFbOKszuibpWCewR9ZsU"
    "FxsR6k2c1bB+Vvs9gSmIqEXi2DlzfXX8LiyfBoftBQ9s6A4jQhyTra3OkHUwoYywJC6Kex"
    "xCBfb6dD6cUiD/hcPp+MR16KEA1qiG0yYYlDLm/uWdIQ3XTprzt5Kl9eynfsPDsCdd3fc7"
    "v7gGDDxM5Cr2dGp2QFdVFgPn93qcYF7Zp4c6QFE5oPOIEGUgDGbk02lCsvQM8H/Q14C6ir"
    "Qf2IIMaoJthpYQF3Ptz0aW/AmyMtAC+avx3XUuaw+rwdkRO8vuD1Ba/fGaW7owyv4PXfY6"
    "sLXr/7vH6YGYlD6EeSJhUz+ShSWDD4W5s4NszgB62qYNd45CXcy+by05K9ixw/KUPpn2Qz"
    "+hyNv3uJp0mNM9zO70YXs6Gk2WDOTnDzznMj3mlut6PJ+VCyANIe8M1X+e78Xh5K5gu0NR"
    "c+4PHoesyIZMYsMwR0vS3pqBEhdNpiGghft8kyIKJSeXpNB3WaPCuN6iVJV1YN+DQBXniM"
    "LNIqoxcTeiN87VSkSqJH3EfHdADnnON8liUiJnw/RdwhnX5tfgfNJQ0jYu+TyDqtCDIw2G"
    "HsNWBeC75PoCt1Zw0R79D7enBzpAXmxb27xhwtJujyvrTQjJ+baZCzUy8m5UTaxRgv10Ta"
    "xeA8RZbdcmFW2rKdlmxzkFHtyLpSgXU5cXUif13fiWrhnniPrZ7lntht1sKW2cpNJ3qzwt"
    "M/qqGaFBPQtuFModZNRH06VKht4JbNgZV1qhA/udh2UxK26pjSsoBm5SNcnyXEnWAbQPUd"
    "HNWUXFh2e1pT4FLv84FNgdH5RqBu/Vr6BNIWojiyDm1KdLvS0Rzi6Kb+hXTkbhrM5pJ2tm"
    "lwe0SSOLhpJ7g3f5aQOFdlq8EvnTkXqPWztjirRngV+4SuONSt9d7FlaZfSdeOCYkJvJha"
    "jITHv5GzKX+UcdsgLkvZxHsX/4iObL5mk2Z2yEpwTOwIYVFsXluRwsKy7tIQ38uxrGsFg+"
    "06BqxD2kT1ABgR+FIp8KWD209U07DY4hC2fek9KLfy9fnk+stQsiDWKOgPeHxzdXspe5mM"
    "VrU+4IvRxNtwMgeoNbtNbDiHNsQ8dSJ7LMSEepDzKwFyqfxqhzn51Q7T+dW8LRLV44EiYg"
    "0EA7XT79bB2J90yJcI9MseXd0M+SoT6Ccs3s1QljZUTVujg+JxWQ3btKCI/hKEwnYIBX7Q"
    "UqRHNgBwyXiwlvXfsuCmR2/lEJuNUjarECceaRONfypB28SKC+KmS1PpXg5xI/JUbzZPtU"
    "qHVBV8w/K9yxjSfKiDSAG+oxTgq028Hmjczl1MmaUqafOMMriV78by9Wz0RWasma1C7NA1"
    "9wFfTL55DBn60RaCbIXrC9DdqhEUaWHBzBcw87R7205OBpJsIiUuKeiyNtNlEOdlmclu46"
    "icaOE2t7DIhLvlTLguoSuooiMDcSjonG19MSnBlmUBq/Id8gXAqhke+Q3SvAcdgdVAGBmu"
    "oTDGx66X/SarCpECp1DNCk5JC6pKwZ4dS5kSbEcgJXtebwIphTMxexbqlzMx5ZUps3mUbf"
    "JtILN191b2UptGAw9NM7tre4TRJj0jUz/AfsDxi4S39sp4RUikcJFPZDDCtOWolERMXZOc"
    "BXAkRCQMEXOESMGZeBI2bQlImmlQLKQP0+nlngR/oT8odLQ+9ISlV9N+/rifZJs2UL3w1Q"
    "hfTWvmiW34ampsVBUbVIXXphtemzo7KsVmyrL2aRf3XQ9MTFf3wK7q4u5rwdmK08vaMqEI"
    "Q1+cY7Uja5YuLs4VJIzAH3As2ujtvTyrVqUFFSNSUoT5bW322LDpSCBmLoe3BOwkqmizsT"
    "O4n8p3Q4lla3zAoy/eIUu0T7NTlqb/ms7kq6FEliSYYHavxgTIVjXvE2JtbpC6GmMp8/Mw"
    "x/48TBugDrUxq1ieYfle4Ltto1MojO9FYYwHPeMXaBNQPRc2R1JsOCveERWFLY129YzDie"
    "o6BnbZ7TucztamjCuxVuDp9YlWKlDsk31EaPedGv352j0hWVPt/f3kPEt/jEolUHZdpO0z"
    "2Trjvw2px3lIetrMsb8wRpc87zvjissLIsgxqyvlSbktsrlf/UdviczdRNIJDVrAdsL0UG"
    "Uhj0ttCvDd7Zw6PiqB9PFRJtDsVueT3az5+io8wGg8m3yVqfHvST9gaqFMvSQ3uknasmHH"
    "06RtaOlLhXB7fq4rgyO9RYfG6orwaAgDtUMGqg6IE7gAa7R8Wlq0fpda35/96wz5qKDYzt"
    "Xm7VzbPzCsZY3Zq/PCWoZtWYIp67iwamcvBR7Zt/rU417gjq1GO/Grj6CN1MWAQ70Fd/by"
    "SDewLiOYti7Nens5TBtjUCueHhQR6YULcQsnB7FBVQHhoHgP0d0Iy0af6HCJhuxNlBGR7W"
    "+f3I3G29hGyQqRdM0vZj//D3EVkVg="
)
